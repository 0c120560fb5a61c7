"""The model zoo: ``create_model(name, **kwargs)``, ``list_models(pattern)``, ``register_model``."""

from edgevit.models import deit, mobile_former, mobilevit, vit  # noqa: F401  (registering)
from edgevit.models._registry import create_model, list_models, register_model
from edgevit.models.weights import load_model, load_state_dict, save_model, save_state_dict

__all__ = [
    "create_model",
    "list_models",
    "load_model",
    "load_state_dict",
    "register_model",
    "save_model",
    "save_state_dict",
]
