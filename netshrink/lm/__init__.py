"""Causal language models: reading GGUF files, tokenizers, and text generation."""
