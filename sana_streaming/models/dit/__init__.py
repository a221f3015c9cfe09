"""The SANA-Streaming hybrid DiT."""
