/* echo.h: what the ICMP echo labs' programs share with the loader in user space.
 *
 * The server's addresses (`struct server_addrs`, server.h) sit in the `server` map; the program
 * counts the replies it sends in a second map (`replies`). BCC turns `map.lookup()` into map
 * accesses only in the program's own file, which is why the maps themselves are declared there
 * and not here.
 */
#ifndef BPFLAB_ECHO_H
#define BPFLAB_ECHO_H

#include "server.h"

/* Keys of the `replies` map: ICMPv4 and ICMPv6 echo replies sent. */
enum { REPLIES_V4, REPLIES_V6, REPLY_KINDS };

#endif /* BPFLAB_ECHO_H */
