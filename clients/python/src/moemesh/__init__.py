"""MoEMesh from Python: call a mesh's router (`Client`) and run Hugging Face models with their experts on the mesh
(`moemesh.transformers.attach`).

    import moemesh, moemesh.transformers
    client = moemesh.Client("127.0.0.1:50051")
    moemesh.transformers.attach(model, client)   # then model.generate(...) as usual
"""
from moemesh.client import TLS, Client, ForwardResult, Layer, ModelDescription, MoEMeshError, Routing

__all__ = ["Client", "TLS", "MoEMeshError", "ModelDescription", "Layer", "ForwardResult", "Routing"]
__version__ = "0.2.0"
