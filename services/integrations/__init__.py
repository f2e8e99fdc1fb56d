"""Clients of the pipeline's external APIs, each with a configurable base URL."""
