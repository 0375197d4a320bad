"""speaking: inject real-time text-to-speech into live Asterisk calls and conferences."""
