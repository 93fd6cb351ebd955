"""gemini-pl: GEMINI dense contrastive representation learning (DHL + GSS) with PyTorch Lightning."""

__version__ = "0.1.0"
