"""The messages between server and clients: their records, a sound reply, what a round asks."""
