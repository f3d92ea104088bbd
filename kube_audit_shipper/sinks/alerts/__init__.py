"""What alert targets share: the Alert record decoded and rendered (native JSON, Falco JSON, display fields), digests."""
