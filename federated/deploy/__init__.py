"""What a deployment needs: TLS certificates, node keys, and the command lines that start it."""
