/* server.h: who the server is. Shared by every lab whose program answers packets itself.
 *
 * The server's own addresses come from a map (`server`, declared in the program) that the
 * loader fills before attaching (bpflab.echo.configure), so nothing is hard-coded: the same
 * program serves any address.
 */
#ifndef BPFLAB_SERVER_H
#define BPFLAB_SERVER_H

#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>

#define REPLY_TTL 64 /* the hop limit of a fresh packet, as the kernel's own replies use */

struct server_addrs {
	__be32 ipv4;         /* network byte order, as in the IPv4 header */
	__be32 ipv6[4];      /* the 16 bytes of the IPv6 address */
	__u8 mac[ETH_ALEN];  /* the interface's own MAC address */
};

#endif /* BPFLAB_SERVER_H */
