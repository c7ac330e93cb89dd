"""The built-in demo: the synthetic temporal benchmark, trained from scratch on CPU."""
