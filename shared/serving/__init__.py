"""What the gateway, workers and insights import to serve a model: the registry of versions
(registry.py), the LiteRT and ONNX Runtime runtimes (runtime.py) and the domain statistics
(domain.py). No TensorFlow, Keras or matplotlib here (tests/shared/test_serving_imports.py
checks it): training, export, reports and cards live in shared/model/, which serving never
imports, so the serving image can leave them out.
"""
