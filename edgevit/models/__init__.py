"""The model zoo: ``create_model(name, **kwargs)``, ``list_models(pattern)``, ``register_model``."""

from edgevit.models import deit, mobile_former, mobilevit, vit  # noqa: F401  (registering)
from edgevit.models._factory import create_model, load_model
from edgevit.models._registry import list_models, model_entrypoint, register_model
from edgevit.models.weights import load_state_dict, save_model, save_state_dict

__all__ = [
    "create_model",
    "list_models",
    "load_model",
    "load_state_dict",
    "model_entrypoint",
    "register_model",
    "save_model",
    "save_state_dict",
]
