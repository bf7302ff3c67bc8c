"""ipset as the kernel (net/netfilter/ipset) and ipset 7.x userspace have it, sans-IO.

- `core.IpsetRegistry`: the sets of one network namespace (create, destroy, swap, rename, list, save)
- `store` (hash types, ip_set_hash_gen.h), `bitmap` (bitmap:ip, bitmap:port, list:set): one set each
- `settype.SET_TYPES`: the types, their revisions and kernel struct sizes
- `command.IpsetSession`: the `ipset` command language with ipset 7.17's output, messages and exit codes
- `kadt`: what `-m set` and `-j SET` ask of a set for a packet (the types' kadt functions)

The hash types hold sets of family inet or inet6 (`elem6`: IPv6 element syntax; `HashSet.family`, `hbits`);
an inet6 set matches IPv6 packets only, as `ip_set_test` checks the family.
"""

from natbox.ipset.command import IpsetSession
from natbox.ipset.core import IpsetRegistry
from natbox.ipset.errors import IpsetError

__all__ = ["IpsetError", "IpsetRegistry", "IpsetSession"]
