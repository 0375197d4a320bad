"""TTS engines: each turns text into a stream of int16 PCM at its own sample rate."""
