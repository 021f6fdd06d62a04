"""Local services for NeurFlow Graph without Docker: Neo4j, an S3 server and Neo4j Browser.

``up()`` builds the Java side with Maven on first use, starts real Neo4j Community 5.26 (embedded,
Bolt on 127.0.0.1:7687, auth on), S3Proxy (filesystem backend, signed requests) and a static server
for Neo4j Browser (127.0.0.1:7474) as detached processes, and waits until each answers. See
docs/services.md.
"""

from graphmodel.stack.config import StackConfig, StackError, load_config
from graphmodel.stack.health import s3_client
from graphmodel.stack.services import down, restart_neo4j, status, stop_neo4j, up

__all__ = [
    "StackConfig",
    "StackError",
    "down",
    "load_config",
    "restart_neo4j",
    "s3_client",
    "status",
    "stop_neo4j",
    "up",
]
