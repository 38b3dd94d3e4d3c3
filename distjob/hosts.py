"""A rank's check, before Horovod starts, that ranks on other hosts can reach this one."""
import ipaddress
import os
import socket

from .config import UserError


def check_hostname(env=os.environ):
    """Gloo tells the other ranks to dial this rank at the address its hostname resolves to. Where
    that is loopback (cloned machines sharing one hostname, `127.0.1.1 NAME` in /etc/hosts), ranks on
    other hosts dial themselves and die at connect: say so instead, before training."""
    if int(env.get("HOROVOD_CROSS_SIZE", "1")) <= 1:  # horovodrun --gloo sets it; 1 host: nothing to reach
        return
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError as e:
        raise UserError(f"hostname {name!r} does not resolve on this host ({e}); ranks on other hosts "
                        "must reach it by that name (docs/multihost.md)") from None
    if ipaddress.ip_address(address).is_loopback:
        raise UserError(f"hostname {name!r} resolves to {address} (loopback) on this host, so ranks on other "
                        "hosts cannot reach it: give every host its own hostname that resolves to its network "
                        "address (docs/multihost.md)")
