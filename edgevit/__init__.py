"""edgevit: train, compress and export vision transformers for phones, with parity checked end to end.

``import edgevit`` stays fast: backends (ExecuTorch, Core ML, LiteRT, ONNX) import lazily inside the
step that needs them.
"""

from edgevit.models import create_model, list_models, register_model
from edgevit.models.profile import profile
from edgevit.utils import EdgeVitError

__version__ = "0.1.0"
__all__ = ["EdgeVitError", "create_model", "list_models", "profile", "register_model", "__version__"]
