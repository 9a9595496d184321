/* echo.h: what the ICMP echo labs' programs share with the loader in user space.
 *
 * The server's own addresses come from a map (`server`, declared in the program) that the
 * loader fills before attaching, so nothing is hard-coded: the same program serves any
 * address. The program counts the replies it sends in a second map (`replies`).
 * BCC turns `map.lookup()` into map accesses only in the program's own file, which is why
 * the maps themselves are declared there and not here.
 */
#ifndef BPFLAB_ECHO_H
#define BPFLAB_ECHO_H

#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>

#define REPLY_TTL 64 /* the hop limit of a fresh packet, as the kernel's own replies use */

struct server_addrs {
	__be32 ipv4;         /* network byte order, as in the IPv4 header */
	__be32 ipv6[4];      /* the 16 bytes of the IPv6 address */
	__u8 mac[ETH_ALEN];  /* the interface's own MAC address */
};

/* Keys of the `replies` map: ICMPv4 and ICMPv6 echo replies sent. */
enum { REPLIES_V4, REPLIES_V6, REPLY_KINDS };

#endif /* BPFLAB_ECHO_H */
