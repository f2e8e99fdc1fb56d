"""Alembic migrations, shipped inside the distribution so `sunflow-ops db upgrade` finds them."""
