"""What every HTTP sink and alert target shares: the client, the TLS/auth/timeout config block, send-rate windows."""
