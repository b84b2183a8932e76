"""Drivers that take bounces in: the daemon's inbound SMTP listener (``listener``) and an IMAP
mailbox polled (``imap``). Each hands the raw message to the intake (``mailer.intake``), which
reads and stores it; neither decides anything about it."""
