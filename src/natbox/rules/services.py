"""Service names of netbase's /etc/services (getservbyname / getservbyport), embedded: the core opens no files."""

from __future__ import annotations

from typing import Final

TCP_BY_NAME: dict[str, int] = {
    'acr-nema': 104, 'afpovertcp': 548, 'amanda': 10080, 'amandaidx': 10082, 'amidxtape': 10083, 'amqp': 5672,
    'amqps': 5671, 'asp': 27374, 'auth': 113, 'authentication': 113, 'bacula-dir': 9101, 'bacula-fd': 9102,
    'bacula-sd': 9103, 'bbs': 7000, 'bgp': 179, 'bgpd': 2605, 'binkp': 24554, 'canna': 5680, 'cfengine': 5308,
    'chargen': 19, 'cisco-sccp': 2000, 'clc-build-daemon': 8990, 'cmd': 514, 'cmip-agent': 164, 'cmip-man': 163,
    'codaauth2': 370, 'codasrv': 2432, 'codasrv-se': 2433, 'csync2': 30865, 'cvspserver': 2401, 'daap': 3689,
    'datametrics': 1645, 'daytime': 13, 'db-lsp': 17500, 'dcap': 22125, 'dicom': 104, 'dict': 2628,
    'dircproxy': 57000, 'discard': 9, 'distcc': 3632, 'domain': 53, 'domain-s': 853, 'echo': 7, 'epmap': 135,
    'epmd': 4369, 'exec': 512, 'f5-globalsite': 2792, 'f5-iquery': 4353, 'fax': 4557, 'fido': 60179, 'finger': 79,
    'font-service': 7100, 'freeciv': 5556, 'ftp': 21, 'ftp-data': 20, 'ftps': 990, 'ftps-data': 989, 'gdomap': 538,
    'gds-db': 3050, 'gds_db': 3050, 'git': 9418, 'gnunet': 2086, 'gnutella-rtr': 6347, 'gnutella-svc': 6346,
    'gopher': 70, 'gpsd': 2947, 'gris': 2135, 'groupwise': 1677, 'gsidcap': 22128, 'gsiftp': 2811,
    'gsigatekeeper': 2119, 'hkp': 11371, 'hprop': 754, 'http': 80, 'http-alt': 8080, 'https': 443, 'hylafax': 4559,
    'ident': 113, 'imap': 143, 'imap2': 143, 'imaps': 993, 'ingreslock': 1524, 'ipp': 631, 'iprop': 2121,
    'ircd': 6667, 'ircs-u': 6697, 'iscsi-target': 3260, 'isisd': 2608, 'isns': 3205, 'iso-tsap': 102,
    'jabber-client': 5222, 'jabber-server': 5269, 'kamanda': 10081, 'kdc': 750, 'kerberos': 88,
    'kerberos-adm': 749, 'kerberos-iv': 750, 'kerberos-master': 751, 'kerberos-sec': 88, 'kerberos4': 750,
    'kerberos5': 88, 'kermit': 1649, 'klogin': 543, 'kpasswd': 464, 'krb-prop': 754, 'krb5': 88, 'krb5_prop': 754,
    'krb_prop': 754, 'krcmd': 544, 'kshell': 544, 'ldap': 389, 'ldaps': 636, 'ldp': 646, 'loc-srv': 135,
    'login': 513, 'lotusnote': 1352, 'lotusnotes': 1352, 'lrrd': 4949, 'mail': 25, 'mailq': 174,
    'microsoft-ds': 445, 'moira-db': 775, 'moira-update': 777, 'moira_db': 775, 'moira_update': 777, 'mon': 2583,
    'ms-sql-s': 1433, 'ms-wbt-server': 3389, 'mtn': 4691, 'munin': 4949, 'mysql': 3306, 'mysql-proxy': 6446,
    'nbd': 10809, 'netbios-ssn': 139, 'netstat': 15, 'nfs': 2049, 'nicname': 43, 'nntp': 119, 'nntps': 563,
    'nqs': 607, 'nrpe': 5666, 'nsca': 5667, 'ntske': 4460, 'null': 9, 'nut': 3493, 'old-radacct': 1646,
    'old-radius': 1645, 'omniorb': 8088, 'openvpn': 1194, 'ospf6d': 2606, 'ospfapi': 2607, 'ospfd': 2604,
    'pawserv': 345, 'pop-3': 110, 'pop3': 110, 'pop3s': 995, 'poppassd': 106, 'portmapper': 111, 'postgres': 5432,
    'postgresql': 5432, 'printer': 515, 'proofd': 1093, 'puppet': 8140, 'qmqp': 628, 'qmtp': 209, 'qotd': 17,
    'quote': 17, 'radacct': 1813, 'radius': 1812, 'radius-acct': 1813, 'radmin-port': 4899, 'readnews': 119,
    'redis': 6379, 'remctl': 4373, 'ripd': 2602, 'ripngd': 2603, 'rmiregistry': 1099, 'rmtcfg': 1236,
    'rootd': 1094, 'rpc2portmap': 369, 'rptp': 5556, 'rsync': 873, 'rtcm-sc104': 2101, 'rtsp': 554,
    'sa-msg-port': 1646, 'saft': 487, 'sane': 6566, 'sane-port': 6566, 'saned': 6566, 'sge-execd': 6445,
    'sge-qmaster': 6444, 'sge_execd': 6445, 'sge_qmaster': 6444, 'sgi-cad': 17004, 'shell': 514, 'sieve': 4190,
    'silc': 706, 'sink': 9, 'sip': 5060, 'sip-tls': 5061, 'skkserv': 1178, 'smtp': 25, 'smtps': 465, 'smux': 199,
    'snmp': 161, 'snmp-trap': 162, 'snmptrap': 162, 'snntp': 563, 'snpp': 444, 'socks': 1080, 'source': 19,
    'spamd': 783, 'spooler': 515, 'ssh': 22, 'ssmtp': 465, 'submission': 587, 'submissions': 465,
    'subversion': 3690, 'sunrpc': 111, 'supfiledbg': 1127, 'supfilesrv': 871, 'suucp': 4031, 'svn': 3690,
    'svrloc': 427, 'syslog': 514, 'syslog-tls': 6514, 'sysrqd': 4094, 'systat': 11, 'tacacs': 49, 'tap': 113,
    'tcpmux': 1, 'telnet': 23, 'telnets': 992, 'tfido': 60177, 'time': 37, 'timserver': 37, 'tinc': 655,
    'tproxy': 8081, 'tsap': 102, 'ttytst': 19, 'untp': 119, 'urd': 465, 'users': 11, 'uucp': 540, 'uucpd': 540,
    'venus': 2430, 'venus-se': 2431, 'wais': 210, 'webcache': 8080, 'webmin': 10000, 'whois': 43, 'wnn6': 22273,
    'www': 80, 'x11': 6000, 'x11-0': 6000, 'x11-1': 6001, 'x11-2': 6002, 'x11-3': 6003, 'x11-4': 6004,
    'x11-5': 6005, 'x11-6': 6006, 'x11-7': 6007, 'xfs': 7100, 'xinetd': 9098, 'xmms2': 9667, 'xmpp-client': 5222,
    'xmpp-server': 5269, 'xtel': 1313, 'xtelw': 1314, 'z3950': 210, 'zabbix-agent': 10050, 'zabbix-trapper': 10051,
    'zebra': 2601, 'zebrasrv': 2600, 'zope': 9673, 'zope-ftp': 8021, 'zserv': 346,
}
TCP_BY_PORT: dict[int, str] = {
    1: 'tcpmux', 10000: 'webmin', 10050: 'zabbix-agent', 10051: 'zabbix-trapper', 10080: 'amanda',
    10081: 'kamanda', 10082: 'amandaidx', 10083: 'amidxtape', 102: 'iso-tsap', 104: 'acr-nema', 106: 'poppassd',
    1080: 'socks', 10809: 'nbd', 1093: 'proofd', 1094: 'rootd', 1099: 'rmiregistry', 11: 'systat', 110: 'pop3',
    111: 'sunrpc', 11112: 'dicom', 1127: 'supfiledbg', 113: 'auth', 11371: 'hkp', 1178: 'skkserv', 119: 'nntp',
    1194: 'openvpn', 1236: 'rmtcfg', 13: 'daytime', 1313: 'xtel', 1314: 'xtelw', 135: 'epmap', 1352: 'lotusnote',
    139: 'netbios-ssn', 143: 'imap2', 1433: 'ms-sql-s', 15: 'netstat', 1524: 'ingreslock', 161: 'snmp',
    162: 'snmp-trap', 163: 'cmip-man', 164: 'cmip-agent', 1645: 'datametrics', 1646: 'sa-msg-port', 1649: 'kermit',
    1677: 'groupwise', 17: 'qotd', 17004: 'sgi-cad', 174: 'mailq', 17500: 'db-lsp', 179: 'bgp', 1812: 'radius',
    1813: 'radius-acct', 19: 'chargen', 199: 'smux', 20: 'ftp-data', 2000: 'cisco-sccp', 2049: 'nfs',
    2086: 'gnunet', 209: 'qmtp', 21: 'ftp', 210: 'z3950', 2101: 'rtcm-sc104', 2119: 'gsigatekeeper', 2121: 'iprop',
    2135: 'gris', 22: 'ssh', 22125: 'dcap', 22128: 'gsidcap', 22273: 'wnn6', 23: 'telnet', 2401: 'cvspserver',
    2430: 'venus', 2431: 'venus-se', 2432: 'codasrv', 2433: 'codasrv-se', 24554: 'binkp', 25: 'smtp', 2583: 'mon',
    2600: 'zebrasrv', 2601: 'zebra', 2602: 'ripd', 2603: 'ripngd', 2604: 'ospfd', 2605: 'bgpd', 2606: 'ospf6d',
    2607: 'ospfapi', 2608: 'isisd', 2628: 'dict', 27374: 'asp', 2792: 'f5-globalsite', 2811: 'gsiftp',
    2947: 'gpsd', 3050: 'gds-db', 30865: 'csync2', 3205: 'isns', 3260: 'iscsi-target', 3306: 'mysql',
    3389: 'ms-wbt-server', 345: 'pawserv', 346: 'zserv', 3493: 'nut', 3632: 'distcc', 3689: 'daap',
    369: 'rpc2portmap', 3690: 'svn', 37: 'time', 370: 'codaauth2', 389: 'ldap', 4031: 'suucp', 4094: 'sysrqd',
    4190: 'sieve', 427: 'svrloc', 43: 'whois', 4353: 'f5-iquery', 4369: 'epmd', 4373: 'remctl', 443: 'https',
    444: 'snpp', 445: 'microsoft-ds', 4460: 'ntske', 4557: 'fax', 4559: 'hylafax', 464: 'kpasswd',
    465: 'submissions', 4691: 'mtn', 487: 'saft', 4899: 'radmin-port', 49: 'tacacs', 4949: 'munin', 5060: 'sip',
    5061: 'sip-tls', 512: 'exec', 513: 'login', 514: 'shell', 515: 'printer', 5222: 'xmpp-client',
    5269: 'xmpp-server', 53: 'domain', 5308: 'cfengine', 538: 'gdomap', 540: 'uucp', 543: 'klogin',
    5432: 'postgresql', 544: 'kshell', 548: 'afpovertcp', 554: 'rtsp', 5556: 'freeciv', 563: 'nntps', 5666: 'nrpe',
    5667: 'nsca', 5671: 'amqps', 5672: 'amqp', 5680: 'canna', 57000: 'dircproxy', 587: 'submission', 6000: 'x11',
    6001: 'x11-1', 6002: 'x11-2', 6003: 'x11-3', 6004: 'x11-4', 6005: 'x11-5', 6006: 'x11-6', 6007: 'x11-7',
    60177: 'tfido', 60179: 'fido', 607: 'nqs', 628: 'qmqp', 631: 'ipp', 6346: 'gnutella-svc', 6347: 'gnutella-rtr',
    636: 'ldaps', 6379: 'redis', 6444: 'sge-qmaster', 6445: 'sge-execd', 6446: 'mysql-proxy', 646: 'ldp',
    6514: 'syslog-tls', 655: 'tinc', 6566: 'sane-port', 6667: 'ircd', 6697: 'ircs-u', 7: 'echo', 70: 'gopher',
    7000: 'bbs', 706: 'silc', 7100: 'font-service', 749: 'kerberos-adm', 750: 'kerberos4', 751: 'kerberos-master',
    754: 'krb-prop', 775: 'moira-db', 777: 'moira-update', 783: 'spamd', 79: 'finger', 80: 'http',
    8021: 'zope-ftp', 8080: 'http-alt', 8081: 'tproxy', 8088: 'omniorb', 8140: 'puppet', 853: 'domain-s',
    871: 'supfilesrv', 873: 'rsync', 88: 'kerberos', 8990: 'clc-build-daemon', 9: 'discard', 9098: 'xinetd',
    9101: 'bacula-dir', 9102: 'bacula-fd', 9103: 'bacula-sd', 9418: 'git', 9667: 'xmms2', 9673: 'zope',
    989: 'ftps-data', 990: 'ftps', 992: 'telnets', 993: 'imaps', 995: 'pop3s',
}
UDP_BY_NAME: dict[str, int] = {
    'Clearcase': 371, 'afs3-bos': 7007, 'afs3-callback': 7001, 'afs3-fileserver': 7000, 'afs3-kaserver': 7004,
    'afs3-prserver': 7002, 'afs3-rmtsys': 7009, 'afs3-update': 7008, 'afs3-vlserver': 7003, 'afs3-volser': 7005,
    'asf-rmcp': 623, 'asp': 27374, 'babel': 6696, 'biff': 512, 'bootpc': 68, 'bootps': 67, 'chargen': 19,
    'clearcase': 371, 'cmip-agent': 164, 'cmip-man': 163, 'codaauth2': 370, 'codasrv': 2432, 'codasrv-se': 2433,
    'comsat': 512, 'datametrics': 1645, 'daytime': 13, 'dhcpv6-client': 546, 'dhcpv6-server': 547, 'discard': 9,
    'domain': 53, 'domain-s': 853, 'echo': 7, 'fsp': 21, 'fspd': 21, 'gdomap': 538, 'gnunet': 2086,
    'gnutella-rtr': 6347, 'gnutella-svc': 6346, 'https': 443, 'iax': 4569, 'icp': 3130, 'icpv2': 3130,
    'ipsec-nat-t': 4500, 'ipx': 213, 'isakmp': 500, 'isns': 3205, 'kdc': 750, 'kerberos': 88, 'kerberos-iv': 750,
    'kerberos-master': 751, 'kerberos-sec': 88, 'kerberos4': 750, 'kerberos5': 88, 'kerberos_master': 751,
    'kpasswd': 464, 'krb5': 88, 'l2f': 1701, 'l2tp': 1701, 'ldap': 389, 'ldaps': 636, 'ldp': 646, 'mdns': 5353,
    'moira-ureg': 779, 'moira_ureg': 779, 'mon': 2583, 'ms-sql-m': 1434, 'netbios-dgm': 138, 'netbios-ns': 137,
    'nfs': 2049, 'ntalk': 518, 'ntp': 123, 'null': 9, 'nut': 3493, 'old-radacct': 1646, 'old-radius': 1645,
    'openvpn': 1194, 'passwd-server': 752, 'passwd_server': 752, 'portmapper': 111, 'predict': 1210,
    'ptp-event': 319, 'ptp-general': 320, 'radacct': 1813, 'radius': 1812, 'radius-acct': 1813, 'route': 520,
    'routed': 520, 'router': 520, 'rpc2portmap': 369, 'rplay': 5555, 'rtcm-sc104': 2101, 'rtsp': 554,
    'sa-msg-port': 1646, 'sgi-cmsd': 17001, 'sgi-crsd': 17002, 'sgi-gcd': 17003, 'sink': 9, 'sip': 5060,
    'sip-tls': 5061, 'snmp': 161, 'snmp-trap': 162, 'snmptrap': 162, 'source': 19, 'sunrpc': 111, 'svrloc': 427,
    'syslog': 514, 'tacacs': 49, 'talk': 517, 'tftp': 69, 'time': 37, 'timserver': 37, 'tinc': 655, 'ttytst': 19,
    'venus': 2430, 'venus-se': 2431, 'who': 513, 'whod': 513, 'xdmcp': 177, 'zephyr-clt': 2103, 'zephyr-hm': 2104,
    'zephyr-srv': 2102,
}
UDP_BY_PORT: dict[int, str] = {
    111: 'sunrpc', 1194: 'openvpn', 1210: 'predict', 123: 'ntp', 13: 'daytime', 137: 'netbios-ns',
    138: 'netbios-dgm', 1434: 'ms-sql-m', 161: 'snmp', 162: 'snmp-trap', 163: 'cmip-man', 164: 'cmip-agent',
    1645: 'datametrics', 1646: 'sa-msg-port', 17001: 'sgi-cmsd', 17002: 'sgi-crsd', 17003: 'sgi-gcd', 1701: 'l2f',
    177: 'xdmcp', 1812: 'radius', 1813: 'radius-acct', 19: 'chargen', 2049: 'nfs', 2086: 'gnunet', 21: 'fsp',
    2101: 'rtcm-sc104', 2102: 'zephyr-srv', 2103: 'zephyr-clt', 2104: 'zephyr-hm', 213: 'ipx', 2430: 'venus',
    2431: 'venus-se', 2432: 'codasrv', 2433: 'codasrv-se', 2583: 'mon', 27374: 'asp', 3130: 'icpv2',
    319: 'ptp-event', 320: 'ptp-general', 3205: 'isns', 3493: 'nut', 369: 'rpc2portmap', 37: 'time',
    370: 'codaauth2', 371: 'clearcase', 389: 'ldap', 427: 'svrloc', 443: 'https', 4500: 'ipsec-nat-t', 4569: 'iax',
    464: 'kpasswd', 49: 'tacacs', 500: 'isakmp', 5060: 'sip', 5061: 'sip-tls', 512: 'biff', 513: 'who',
    514: 'syslog', 517: 'talk', 518: 'ntalk', 520: 'route', 53: 'domain', 5353: 'mdns', 538: 'gdomap',
    546: 'dhcpv6-client', 547: 'dhcpv6-server', 554: 'rtsp', 5555: 'rplay', 623: 'asf-rmcp', 6346: 'gnutella-svc',
    6347: 'gnutella-rtr', 636: 'ldaps', 646: 'ldp', 655: 'tinc', 6696: 'babel', 67: 'bootps', 68: 'bootpc',
    69: 'tftp', 7: 'echo', 7000: 'afs3-fileserver', 7001: 'afs3-callback', 7002: 'afs3-prserver',
    7003: 'afs3-vlserver', 7004: 'afs3-kaserver', 7005: 'afs3-volser', 7007: 'afs3-bos', 7008: 'afs3-update',
    7009: 'afs3-rmtsys', 750: 'kerberos4', 751: 'kerberos-master', 752: 'passwd-server', 779: 'moira-ureg',
    853: 'domain-s', 88: 'kerberos', 9: 'discard',
}
SCTP_BY_NAME: dict[str, int] = {
    'amqp': 5672,
}
SCTP_BY_PORT: dict[int, str] = {
    5672: 'amqp',
}
DCCP_BY_NAME: dict[str, int] = {

}
DCCP_BY_PORT: dict[int, str] = {

}

_BY_NAME: Final = {"tcp": TCP_BY_NAME, "udp": UDP_BY_NAME, "sctp": SCTP_BY_NAME, "dccp": DCCP_BY_NAME}
_BY_PORT: Final = {"tcp": TCP_BY_PORT, "udp": UDP_BY_PORT, "sctp": SCTP_BY_PORT, "dccp": DCCP_BY_PORT}


def service_port(name: str, proto: str | None) -> int | None:
    """`getservbyname(name, proto)`; with proto None, any protocol."""
    if proto is None:
        for d in _BY_NAME.values():
            if name in d:
                return d[name]
        return None
    return _BY_NAME.get(proto, {}).get(name)


def service_name(port: int, proto: str) -> str | None:
    """`getservbyport(port, proto)`."""
    return _BY_PORT.get(proto, {}).get(port)
