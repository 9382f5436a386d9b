// SPDX-License-Identifier: MIT OR Apache-2.0 OR GPL-2.0
//
// katop's BPF fd reader: one pass over every process's fd table (the kernel's `task_file`
// iterator), writing one 32-byte record per socket fd: who holds it, its inode, and for a TCP
// socket the keepalive options exactly as `getsockopt` would answer them (tcp_getsockopt in
// net/ipv4/tcp.c: `keepalive_time_when`, `keepalive_intvl_when`, `keepalive_probes` fall back
// to the socket's namespace sysctls; SO_KEEPALIVE is `sock_flag(sk, SOCK_KEEPOPEN)`;
// TCP_USER_TIMEOUT is `icsk_user_timeout`, in ms). Times are in jiffies: katop learns HZ from
// a socket of its own whose options it set (src/collector/fd_iter.rs).
//
// Built by build.rs with `clang -target bpf -O2 -g` when clang is installed; the structs below
// name only the fields read, and `preserve_access_index` makes the loader (aya) move each
// access to the running kernel's offsets (CO-RE, from /sys/kernel/btf/vmlinux).

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define CORE __attribute__((preserve_access_index))

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 seq_num; // objects shown so far in this pass: 0 at its first
} CORE;

struct task_struct {
	int pid;
	int tgid;
} CORE;

struct inode {
	unsigned long i_ino;
} CORE;

struct file {
	struct inode *f_inode;
} CORE;

struct bpf_iter__task_file {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
	__u32 fd;
	struct file *file;
} CORE;

struct netns_ipv4 {
	__u8 sysctl_tcp_keepalive_probes;
	int sysctl_tcp_keepalive_time;
	int sysctl_tcp_keepalive_intvl;
} CORE;

struct net {
	struct netns_ipv4 ipv4;
} CORE;

typedef struct {
	struct net *net;
} CORE possible_net_t;

struct sock_common {
	unsigned short skc_family;
	possible_net_t skc_net;
	unsigned long skc_flags; // newer kernels (`sk_flags` is a define for it)
} CORE;

struct sock {
	struct sock_common __sk_common;
	__u16 sk_type;
	__u16 sk_protocol;
} CORE;

// Older kernels kept the flags in struct sock itself (a "flavor": the suffix is ignored).
struct sock___flags_in_sock {
	unsigned long sk_flags;
} CORE;

struct socket {
	struct sock *sk;
} CORE;

struct inet_sock {
	struct sock sk;
} CORE;

struct inet_connection_sock {
	struct inet_sock icsk_inet;
	__u32 icsk_user_timeout;
} CORE;

struct tcp_sock {
	struct inet_connection_sock inet_conn;
	__u32 keepalive_time;
	__u32 keepalive_intvl;
	__u8 keepalive_probes;
} CORE;

// Helper numbers from include/uapi/linux/bpf.h (stable ABI).
static long (*bpf_seq_write)(struct seq_file *m, const void *data, __u32 len) = (void *)127;
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *src) = (void *)113;
static struct socket *(*bpf_sock_from_file)(struct file *file) = (void *)162;

// enum sock_flags in include/net/sock.h: SOCK_DEAD, SOCK_DONE, SOCK_URGINLINE, SOCK_KEEPOPEN.
#define SOCK_KEEPOPEN 3
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define IPPROTO_TCP 6
#define FIELD_EXISTS 2 // enum bpf_field_info_kind

#define REC_TCP 1
#define REC_KEEPALIVE 2
#define REC_PROCESS 4
#define REC_UNREAD 8 // a field could not be copied: katop asks getsockopt instead

// A field of a struct the verifier cannot follow a pointer into (the socket's `sk` is not a
// trusted pointer, so `bpf_skc_to_tcp_sock` refuses it): copied at its CO-RE offset. A failed
// copy is flagged, never a zero taken for a value.
#define READ(r, dst, src)                                                                          \
	do {                                                                                       \
		if (bpf_probe_read_kernel(&(dst), sizeof(dst),                                     \
					  __builtin_preserve_access_index(&(src))))                \
			(r).flags |= REC_UNREAD;                                                   \
	} while (0)

// The process the last record was written for. Each process's first file (of any kind) writes
// a marker record, so katop knows which processes the pass walked; one it did not is read from
// /proc instead, and a socket held there is never taken as held by none. A file whose records
// do not fit the buffer is shown again at the next read, everything it wrote dropped: a failed
// write forgets the process, so its marker is written again then.
__u32 last_tgid = 0;

// The record; its layout is parsed in fd_iter.rs (little-endian, no padding).
struct record {
	__u32 tgid;
	__u32 fd;
	__u64 ino;
	__u32 idle_jiffies;
	__u32 intvl_jiffies;
	__u32 user_timeout_ms;
	__u8 probes;
	__u8 flags;
	__u16 tid_is_leader;
};

SEC("iter/task_file")
int katop_fds(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct record r = {}, marker = {};
	struct socket *sock;
	struct sock *sk;
	struct tcp_sock *tp;
	struct net *net;
	int sysctl;
	unsigned long sk_flags;

	if (!task || !file)
		return 0;
	if (ctx->meta->seq_num == 0 || task->tgid != last_tgid) {
		last_tgid = task->tgid;
		marker.tgid = task->tgid;
		marker.flags = REC_PROCESS;
		if (bpf_seq_write(ctx->meta->seq, &marker, sizeof(marker)))
			last_tgid = 0;
	}
	sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	r.tgid = task->tgid;
	r.fd = ctx->fd;
	r.ino = file->f_inode->i_ino;
	r.tid_is_leader = task->pid == task->tgid;
	sk = sock->sk;
	// A TCP socket of either family: `struct tcp_sock` (a held socket is always a full one).
	if (sk && sk->sk_type == SOCK_STREAM && sk->sk_protocol == IPPROTO_TCP &&
	    (sk->__sk_common.skc_family == AF_INET || sk->__sk_common.skc_family == AF_INET6)) {
		tp = (struct tcp_sock *)sk;
		net = sk->__sk_common.skc_net.net;
		r.flags = REC_TCP;
		if (__builtin_preserve_field_info(sk->__sk_common.skc_flags, FIELD_EXISTS))
			sk_flags = sk->__sk_common.skc_flags;
		else
			sk_flags = ((struct sock___flags_in_sock *)sk)->sk_flags;
		if ((sk_flags >> SOCK_KEEPOPEN) & 1)
			r.flags |= REC_KEEPALIVE;
		READ(r, r.idle_jiffies, tp->keepalive_time);
		READ(r, r.intvl_jiffies, tp->keepalive_intvl);
		READ(r, r.probes, tp->keepalive_probes);
		READ(r, r.user_timeout_ms, tp->inet_conn.icsk_user_timeout);
		if (!r.idle_jiffies) {
			sysctl = net->ipv4.sysctl_tcp_keepalive_time;
			r.idle_jiffies = sysctl;
		}
		if (!r.intvl_jiffies) {
			sysctl = net->ipv4.sysctl_tcp_keepalive_intvl;
			r.intvl_jiffies = sysctl;
		}
		if (!r.probes)
			r.probes = net->ipv4.sysctl_tcp_keepalive_probes;
	}
	if (bpf_seq_write(ctx->meta->seq, &r, sizeof(r)))
		last_tgid = 0;
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
