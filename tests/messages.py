"""Messages as they arrive at a ClientApp or at the server, built for tests outside Flower."""

from __future__ import annotations

import time

from flwr.app import Error, Message, Metadata, RecordDict
from flwr.common.serde import make_message


def message(
    content: RecordDict | None = None,
    *,
    src: int = 0,
    dst: int = 0,
    message_type: str = "train",
    message_id: str = "m",
    reply_to: str = "",
    run_id: int = 1,
    group_id: str = "",
    error: Error | None = None,
) -> Message:
    """A message from node ``src`` to ``dst`` with this content (or error)."""
    metadata = Metadata(
        run_id=run_id,
        message_id=message_id,
        src_node_id=src,
        dst_node_id=dst,
        reply_to_message_id=reply_to,
        group_id=group_id,
        created_at=time.time(),
        ttl=600.0,
        message_type=message_type,
    )
    return make_message(metadata, content=content, error=error)
