// SPDX-License-Identifier: MIT OR Apache-2.0 OR GPL-2.0
//
// katop's BPF TCP reader: one pass of the kernel's `tcp` iterator over every TCP socket of
// katop's network namespace, writing one 144-byte record per socket with what a sock_diag
// dump with INET_DIAG_INFO says of it, computed as the kernel computes it there:
//   - net/ipv4/inet_diag.c: inet_diag_msg_common_fill (addresses, ports, interface, cookie),
//     inet_sk_diag_fill (the timer: ICSK_TIME_RETRANS/REO_TIMEOUT/LOSS_PROBE is 1 with
//     icsk_retransmits, PROBE0 is 4 with icsk_probes_out, a pending sk_timer is 2 with
//     icsk_probes_out), inet_twsk_diag_fill (TIME_WAIT: tw_substate, timer 3) and
//     inet_req_diag_fill (a request socket: SYN_RECV, timer 1 with num_retrans; uid and inode
//     0 for both);
//   - net/ipv4/tcp_diag.c: tcp_diag_get_info (the queues);
//   - net/ipv4/tcp.c: tcp_get_info, the fields katop reads (src/model/tcp_info.rs).
// Clocks are written in jiffies, as the kernel keeps them: katop learns HZ from its own check
// socket and converts them as jiffies_to_msecs / jiffies_to_usecs do (tcp_iter.rs).
//
// Built by build.rs like fd_iter.bpf.c (CO-RE: `preserve_access_index` structs naming only
// the fields read).

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef long long __s64;

#define SEC(name) __attribute__((section(name), used))
#define CORE __attribute__((preserve_access_index))

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
} CORE;

struct hlist_node {
	struct hlist_node *next;
	struct hlist_node **pprev;
} CORE;

struct timer_list {
	struct hlist_node entry;
	unsigned long expires;
} CORE;

struct in6_addr {
	union {
		__u32 u6_addr32[4];
	} in6_u;
} CORE;

struct sock_common {
	__u32 skc_daddr;
	__u32 skc_rcv_saddr;
	__u16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	int skc_bound_dev_if;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} CORE;

struct inode {
	unsigned long i_ino;
} CORE;

struct socket {
	short type;
} CORE;

// `sock_i_ino`: a socket's inode is the one allocated with it (SOCK_INODE).
struct socket_alloc {
	struct socket socket;
	struct inode vfs_inode;
} CORE;

struct sock {
	struct sock_common __sk_common;
	unsigned long sk_ino; // Linux 6.18+: what sock_i_ino() reads
	struct socket *sk_socket;
	struct timer_list sk_timer;
	__u32 sk_ack_backlog;
	__u32 sk_max_ack_backlog;
} CORE;

struct inet_sock {
	struct sock sk;
} CORE;

struct inet_connection_sock {
	struct inet_sock icsk_inet;
	struct timer_list icsk_retransmit_timer;
	__u32 icsk_rto;
	__u8 icsk_ca_state : 5;
	__u8 icsk_ca_initialized : 1;
	__u8 icsk_ca_setsockopt : 1;
	__u8 icsk_ca_dst_locked : 1;
	__u8 icsk_retransmits;
	__u8 icsk_pending;
	__u8 icsk_backoff;
	__u8 icsk_probes_out;
	struct {
		__u32 lrcvtime;
	} icsk_ack;
} CORE;

struct tcp_sock {
	struct inet_connection_sock inet_conn;
	__u32 rcv_nxt;
	__u32 copied_seq;
	__u32 write_seq;
	__u32 snd_una;
	__u32 lsndtime;
	__u32 rcv_tstamp;
	__u32 srtt_us;
	__u32 mdev_us;
	__u32 total_retrans;
	__u64 bytes_acked;
	__u64 bytes_received;
	__u64 bytes_sent;
	__u32 rto_stamp;
	__u16 total_rto_recoveries;
	__u32 total_rto_time;
	unsigned int keepalive_time;
} CORE;

struct inet_timewait_sock {
	struct sock_common __tw_common;
	unsigned char tw_substate;
	struct timer_list tw_timer;
} CORE;

struct request_sock {
	struct sock_common __req_common;
	__u8 num_retrans;
	struct timer_list rsk_timer;
} CORE;

// Only its size is read: what INET_DIAG_INFO carries (tcp_diag's idiag_info_size).
struct tcp_info {
	__u8 tcpi_state;
} CORE;

struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
	__u32 uid;
} CORE;

// Helper numbers from include/uapi/linux/bpf.h (stable ABI).
static long (*bpf_seq_write)(struct seq_file *m, const void *data, __u32 len) = (void *)127;
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *src) = (void *)113;
static __u64 (*bpf_get_socket_cookie)(void *sk) = (void *)46;
static __u64 (*bpf_jiffies64)(void) = (void *)118;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static struct tcp_sock *(*bpf_skc_to_tcp_sock)(void *sk) = (void *)137;

#define AF_INET6 10
#define TCP_SYN_RECV 3
#define TCP_TIME_WAIT 6
#define TCP_LISTEN 10
#define TCP_NEW_SYN_RECV 12
// include/net/inet_connection_sock.h
#define ICSK_TIME_RETRANS 1
#define ICSK_TIME_PROBE0 3
#define ICSK_TIME_LOSS_PROBE 5
#define ICSK_TIME_REO_TIMEOUT 6
// enum bpf_field_info_kind / bpf_type_info_kind
#define FIELD_BYTE_OFFSET 0
#define FIELD_BYTE_SIZE 1
#define FIELD_EXISTS 2
#define FIELD_LSHIFT_U64 4
#define FIELD_RSHIFT_U64 5
#define TYPE_SIZE 1

#define REC_FULL 1 // a full socket: the tcp_info fields are set
#define REC_UNREAD 2 // a field could not be copied: the record is not used

// A field of a socket seen as another type than the iterator's (`struct sock_common`): copied
// at its CO-RE offset. The kernel's bpf_skc_to_tcp_timewait_sock / _request_sock would refuse
// the TIME_WAIT and request sockets of an MPTCP or sockmap listener (they check sk_prot),
// which the dump lists. A failed copy fails the pass, never a zero taken for a value.
#define READ(r, dst, src)                                                                          \
	do {                                                                                       \
		if (bpf_probe_read_kernel(&(dst), sizeof(dst),                                     \
					  __builtin_preserve_access_index(&(src))))                \
			(r).flags |= REC_UNREAD;                                                   \
	} while (0)

// The record; its layout is parsed in tcp_iter.rs (little-endian, no padding).
struct record {
	__u64 cookie; // 0
	__u32 src[4]; // 8: network order, as the kernel keeps it
	__u32 dst[4]; // 24
	__u32 ifindex; // 40
	__u32 inode; // 44: idiag_inode is 32 bits
	__u32 uid; // 48
	__u32 rqueue; // 52
	__u32 wqueue; // 56
	__u32 expires_jiffies; // 60: max(0, expires - jiffies)
	__u16 sport; // 64: host order
	__u16 dport; // 66: host order
	__u8 family; // 68
	__u8 state; // 69
	__u8 timer; // 70
	__u8 retrans; // 71
	__u8 ca_state; // 72
	__u8 retransmits; // 73
	__u8 probes; // 74
	__u8 backoff; // 75
	__u32 rto_jiffies; // 76
	__u32 last_data_sent_jiffies; // 80
	__u32 last_data_recv_jiffies; // 84
	__u32 last_ack_recv_jiffies; // 88
	__u32 rtt_us; // 92
	__u32 rttvar_us; // 96
	__u32 total_retrans; // 100
	__u64 bytes_acked; // 104
	__u64 bytes_received; // 112
	__u64 bytes_sent; // 120
	__u16 total_rto_recoveries; // 128
	__u16 info_len; // 130: sizeof(struct tcp_info) in this kernel
	__u32 total_rto_time_ms; // 132
	__u32 keepalive_time_jiffies; // 136: for katop's check socket (HZ)
	__u8 flags; // 140
	__u8 has_rto_fields; // 141: the kernel has total_rto_* (Linux 6.7+)
	__u16 pad; // 142
};

// A timer's time left as inet_diag measures it (jiffies_delta_to_msecs clamps at 0), in
// jiffies; a delta past 32 bits (no TCP timer is that far) is capped.
static __attribute__((always_inline)) __u32 left(unsigned long expires, __u64 now)
{
	__s64 d = (__s64)(expires - now);

	if (d < 0)
		return 0;
	if (d > 0xffffffffLL)
		return 0xffffffff;
	return (__u32)d;
}

static __attribute__((always_inline)) void addresses(struct record *r, struct sock_common *skc)
{
	r->family = skc->skc_family;
	r->sport = skc->skc_num;
	r->dport = __builtin_bswap16(skc->skc_dport);
	r->ifindex = skc->skc_bound_dev_if;
	if (r->family == AF_INET6) {
		for (int i = 0; i < 4; i++) {
			r->src[i] = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[i];
			r->dst[i] = skc->skc_v6_daddr.in6_u.u6_addr32[i];
		}
	} else {
		r->src[0] = skc->skc_rcv_saddr;
		r->dst[0] = skc->skc_daddr;
	}
}

// icsk_ca_state is a bitfield: read its byte at the running kernel's offset, then shift
// (libbpf's BPF_CORE_READ_BITFIELD_PROBED).
static __attribute__((always_inline)) int ca_state(struct inet_connection_sock *icsk, __u8 *out)
{
	__u64 v = 0;

	if (bpf_probe_read_kernel(&v, __builtin_preserve_field_info(icsk->icsk_ca_state, FIELD_BYTE_SIZE),
				  (void *)icsk + __builtin_preserve_field_info(icsk->icsk_ca_state,
									       FIELD_BYTE_OFFSET)))
		return -1;
	v <<= __builtin_preserve_field_info(icsk->icsk_ca_state, FIELD_LSHIFT_U64);
	v >>= __builtin_preserve_field_info(icsk->icsk_ca_state, FIELD_RSHIFT_U64);
	*out = v;
	return 0;
}

static __attribute__((always_inline)) void full(struct record *r, struct tcp_sock *tp, __u64 now)
{
	struct inet_connection_sock *icsk = &tp->inet_conn;
	struct sock *sk = &icsk->icsk_inet.sk;
	struct socket *sock = sk->sk_socket;
	__u32 jiffies32 = now;
	__u8 pending = icsk->icsk_pending;
	unsigned long ino = 0;
	int rq;

	r->flags |= REC_FULL;
	r->state = sk->__sk_common.skc_state;
	if (__builtin_preserve_field_info(sk->sk_ino, FIELD_EXISTS))
		ino = sk->sk_ino;
	else if (sock && bpf_probe_read_kernel(&ino, sizeof(ino),
					       &((struct socket_alloc *)sock)->vfs_inode.i_ino))
		r->flags |= REC_UNREAD;
	r->inode = ino;
	if (r->state == TCP_LISTEN) {
		r->rqueue = sk->sk_ack_backlog;
		r->wqueue = sk->sk_max_ack_backlog;
	} else {
		rq = tp->rcv_nxt - tp->copied_seq;
		r->rqueue = rq < 0 ? 0 : rq;
		r->wqueue = tp->write_seq - tp->snd_una;
	}
	if (pending == ICSK_TIME_RETRANS || pending == ICSK_TIME_REO_TIMEOUT ||
	    pending == ICSK_TIME_LOSS_PROBE) {
		r->timer = 1;
		r->retrans = icsk->icsk_retransmits;
		r->expires_jiffies = left(icsk->icsk_retransmit_timer.expires, now);
	} else if (pending == ICSK_TIME_PROBE0) {
		r->timer = 4;
		r->retrans = icsk->icsk_probes_out;
		r->expires_jiffies = left(icsk->icsk_retransmit_timer.expires, now);
	} else if (sk->sk_timer.entry.pprev) { // timer_pending()
		r->timer = 2;
		r->retrans = icsk->icsk_probes_out;
		r->expires_jiffies = left(sk->sk_timer.expires, now);
	}
	r->keepalive_time_jiffies = tp->keepalive_time;
	// tcp_get_info: a listener's fields stay zero (katop does not keep them).
	if (r->state == TCP_LISTEN)
		return;
	if (ca_state(icsk, &r->ca_state))
		r->flags |= REC_UNREAD;
	r->retransmits = icsk->icsk_retransmits;
	r->probes = icsk->icsk_probes_out;
	r->backoff = icsk->icsk_backoff;
	r->rto_jiffies = icsk->icsk_rto;
	r->last_data_sent_jiffies = jiffies32 - tp->lsndtime;
	r->last_data_recv_jiffies = jiffies32 - icsk->icsk_ack.lrcvtime;
	r->last_ack_recv_jiffies = jiffies32 - tp->rcv_tstamp;
	r->rtt_us = tp->srtt_us >> 3;
	r->rttvar_us = tp->mdev_us >> 2;
	r->total_retrans = tp->total_retrans;
	r->bytes_acked = tp->bytes_acked;
	r->bytes_received = tp->bytes_received;
	r->bytes_sent = tp->bytes_sent;
	if (__builtin_preserve_field_info(tp->total_rto_time, FIELD_EXISTS)) {
		r->has_rto_fields = 1;
		r->total_rto_recoveries = tp->total_rto_recoveries;
		r->total_rto_time_ms = tp->total_rto_time;
		if (tp->rto_stamp) // tcp_clock_ms() - rto_stamp, in 32 bits as the kernel adds it
			r->total_rto_time_ms += (__u32)(bpf_ktime_get_ns() / 1000000 - tp->rto_stamp);
	}
}

SEC("iter/tcp")
int katop_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct inet_timewait_sock *tw;
	struct request_sock *req;
	struct tcp_sock *tp;
	unsigned long expires = 0;
	struct record r = {};
	__u64 now = bpf_jiffies64();

	if (!skc)
		return 0;
	r.cookie = bpf_get_socket_cookie(skc);
	r.info_len = __builtin_preserve_type_info(*(struct tcp_info *)0, TYPE_SIZE);
	addresses(&r, skc);
	if (skc->skc_state == TCP_TIME_WAIT) {
		tw = (void *)skc;
		READ(r, r.state, tw->tw_substate);
		READ(r, expires, tw->tw_timer.expires);
		r.timer = 3;
		r.expires_jiffies = left(expires, now);
	} else if (skc->skc_state == TCP_NEW_SYN_RECV) {
		req = (void *)skc;
		READ(r, r.retrans, req->num_retrans);
		READ(r, expires, req->rsk_timer.expires);
		r.state = TCP_SYN_RECV;
		r.timer = 1;
		r.expires_jiffies = left(expires, now);
	} else {
		tp = bpf_skc_to_tcp_sock(skc);
		if (tp) {
			r.uid = ctx->uid;
			full(&r, tp, now);
		} else { // not a full TCP socket: never in the TCP hash tables, never dropped unsaid
			r.flags |= REC_UNREAD;
		}
	}
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
