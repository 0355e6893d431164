"""mvlab: a lab for ablating hybrid Mamba-Transformer vision backbones."""
__version__ = "0.1.0"

# Importing the models registers the mambavision_* names with timm.
from mvlab.grammar import format_spec, parse_spec  # noqa: E402
from mvlab.models import build_model, create_model, load_pretrained  # noqa: E402

__all__ = ["build_model", "create_model", "parse_spec", "format_spec", "load_pretrained",
           "__version__"]
