"""The run key names files on the node, so a key that is not plain hex is refused."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict

from client.node_files import run_key
from federated.protocol import message_keys as keys
from tests.test_reply_validation import _reply


def _message(key: object | None) -> Message:
    config = ConfigRecord({keys.SERVER_ROUND: 1} | ({keys.RUN_KEY: key} if key is not None else {}))
    return _reply(RecordDict({keys.CONFIG: config}))


CONTEXT = Context(42, 7, {}, RecordDict(), {})


def test_the_server_key_names_the_files_and_flower_run_id_stands_in_for_none() -> None:
    assert run_key(_message("0123abcd" * 2), CONTEXT) == "0123abcd" * 2
    assert run_key(_message(None), CONTEXT) == "flwr42"


@pytest.mark.parametrize("key", ["../../etc/passwd", "ABCDEF12", "abc", "a" * 65, 12345678])
def test_a_key_that_could_name_another_file_is_refused(key: object) -> None:
    with pytest.raises(ValueError, match="is not 8 to 64 hex digits"):
        run_key(_message(key), CONTEXT)
