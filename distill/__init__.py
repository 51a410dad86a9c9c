"""distill: train, evaluate and export a distilled student."""
