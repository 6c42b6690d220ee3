"""Alembic environment: runs on the connection the manager passes in (see db.migrate)."""
from alembic import context

from manager_service.storage.models import metadata_obj

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata_obj)
with context.begin_transaction():
    context.run_migrations()
