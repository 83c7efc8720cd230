"""saliency-noise: crafted input noise for diffusion models (arXiv 2205.03859)."""
