"""matex: MATEX and baseline explanations of CLIP-style chest X-ray models, and their evaluation."""
__version__ = "0.1.0"
