"""Code shared by every service: settings, errors, storage, messaging, images, model, metrics.

Imports go one way: services import `shared`; `shared` imports no service.
"""
