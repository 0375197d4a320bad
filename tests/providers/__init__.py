"""Local stand-ins for the cloud TTS providers, speaking their real wire protocols."""
