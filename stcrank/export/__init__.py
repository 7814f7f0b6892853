"""Export trained networks, re-rankers and whole ranking pipelines to ONNX and ``torch.export`` programs.

See the Deploying page of the docs: :mod:`stcrank.export.formats` writes the files, :mod:`stcrank.export.schema`
describes their inputs, :mod:`stcrank.export.standalone` loads and checks them without stcrank.
"""
