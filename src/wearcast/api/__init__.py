"""The prediction API: FastAPI app factory in :mod:`wearcast.api.main`."""
