"""Crowd annotation web app for PSC6K (FastAPI). Imports psc6k, never the reverse."""
