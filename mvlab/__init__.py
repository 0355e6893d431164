"""mvlab: a lab for ablating hybrid Mamba-Transformer vision backbones."""
__version__ = "0.1.0"
