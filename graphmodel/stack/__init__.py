"""Local services for NeurFlow Graph without Docker: Neo4j (with Neo4j Browser), an S3 server and
the NeurFlow guide.

``up()`` resolves the Java side with Maven on first use, starts Neo4j Community 5.26's own server
(Bolt on 127.0.0.1:7687, Browser on http://127.0.0.1:7474/browser/, auth on, initial password set
with neo4j-admin), S3Proxy (filesystem backend, signed requests) and a small Python server for the
NeurFlow guide (127.0.0.1:7475) as detached processes, and waits until each answers. See
docs/services.md.
"""

from graphmodel.stack.config import StackConfig, StackError, load_config
from graphmodel.stack.health import s3_client
from graphmodel.stack.services import browser_lines, down, restart_neo4j, status, stop_neo4j, up

__all__ = [
    "StackConfig",
    "StackError",
    "browser_lines",
    "down",
    "load_config",
    "restart_neo4j",
    "s3_client",
    "status",
    "stop_neo4j",
    "up",
]
