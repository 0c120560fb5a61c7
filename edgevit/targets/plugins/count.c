/*
 * edgevit's counting plugin for QEMU user-mode (plugin API version 4, include/qemu/qemu-plugin.h).
 *
 * Counts how many times each translation block (TB) executes, per vCPU (guest thread), with one inline add per TB
 * execution (no helper call). The guest marks counting windows with a marker system call: write(MARK_FD, buf, 1)
 * opens a window on the calling thread, write(MARK_FD, buf, 2) closes it (the call fails with EBADF; nothing else
 * happens). A window counts only the thread that opened it, so other threads' timed waits never enter it. At exit
 * every executed block is written as one line:
 *
 *     VADDR TOTAL W0 W1 ... BYTES
 *
 * VADDR is the guest address of the block's first instruction (hex), TOTAL its executions over the whole run and
 * all threads, Wi its executions inside window i (decimal), BYTES its machine code (hex), which the host decodes
 * (edgevit.targets.cost, with capstone) into a count per mnemonic. The first line is "# windows N".
 * A block is identified by its address, length and code bytes, so code unmapped and replaced by other code at the
 * same address (dlclose) stays two blocks. Usage: -plugin libcount.so,out=PATH
 */
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MARK_FD 0x7ffffff0 /* edgevit.targets._arm64_runner.MARK_FD */
#define SYS_WRITE 64       /* aarch64 Linux */
#define MAX_WINDOWS 8

typedef struct {
    uint64_t vaddr;
    uint64_t hash; /* FNV-1a of the code bytes */
    size_t size;   /* bytes */
    uint8_t *code;
    struct qemu_plugin_scoreboard *count; /* one uint64_t per vCPU */
    uint64_t start;                       /* the window's thread's count when the window opened */
    uint64_t window[MAX_WINDOWS];
} Block;

static GMutex lock;
static GHashTable *blocks;
static char *out_path;
static int windows;       /* windows opened so far */
static int open_vcpu = -1; /* the thread whose window is open, or -1 */

static guint block_hash(gconstpointer p)
{
    const Block *b = p;
    return (guint)(b->vaddr ^ (b->vaddr >> 32) ^ b->hash ^ b->size);
}

static gboolean block_equal(gconstpointer a, gconstpointer b)
{
    const Block *x = a, *y = b;
    return x->vaddr == y->vaddr && x->size == y->size && x->hash == y->hash &&
           memcmp(x->code, y->code, x->size) == 0;
}

static void write_counts(qemu_plugin_id_t id, void *unused)
{
    FILE *f = fopen(out_path, "w");
    GHashTableIter it;
    gpointer key, value;

    if (!f) {
        fprintf(stderr, "count plugin: cannot write %s\n", out_path);
        return;
    }
    g_mutex_lock(&lock);
    fprintf(f, "# windows %d\n", windows);
    g_hash_table_iter_init(&it, blocks);
    while (g_hash_table_iter_next(&it, &key, &value)) {
        Block *b = key;
        uint64_t n = qemu_plugin_u64_sum(qemu_plugin_scoreboard_u64(b->count));
        if (n == 0) {
            continue;
        }
        fprintf(f, "%" PRIx64 " %" PRIu64 " ", b->vaddr, n);
        for (int w = 0; w < windows; w++) {
            fprintf(f, "%" PRIu64 " ", b->window[w]);
        }
        for (size_t i = 0; i < b->size; i++) {
            fprintf(f, "%02x", b->code[i]);
        }
        fputc('\n', f);
    }
    g_mutex_unlock(&lock);
    fclose(f);
}

static void mark(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t fd, uint64_t buf, uint64_t len,
                 uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    GHashTableIter it;
    gpointer key, value;

    if (num != SYS_WRITE || fd != MARK_FD || (len != 1 && len != 2)) {
        return;
    }
    g_mutex_lock(&lock);
    if (len == 1 && open_vcpu < 0 && windows < MAX_WINDOWS) {
        open_vcpu = (int)vcpu;
        g_hash_table_iter_init(&it, blocks);
        while (g_hash_table_iter_next(&it, &key, &value)) {
            Block *b = key;
            b->start = qemu_plugin_u64_get(qemu_plugin_scoreboard_u64(b->count), vcpu);
        }
    } else if (len == 2 && open_vcpu == (int)vcpu) {
        g_hash_table_iter_init(&it, blocks);
        while (g_hash_table_iter_next(&it, &key, &value)) {
            Block *b = key; /* blocks first translated inside the window started at 0 */
            b->window[windows] = qemu_plugin_u64_get(qemu_plugin_scoreboard_u64(b->count), vcpu) - b->start;
        }
        windows++;
        open_vcpu = -1;
    }
    g_mutex_unlock(&lock);
}

static void count_block(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    Block probe = {.vaddr = qemu_plugin_tb_vaddr(tb), .hash = 1469598103934665603ULL};
    uint8_t buf[4096];
    Block *b;

    for (size_t i = 0; i < n; i++) {
        const struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        size_t len = qemu_plugin_insn_size(insn);
        if (probe.size + len > sizeof(buf)) {
            break; /* A64 blocks are at most 512 instructions (2 KiB); never reached */
        }
        qemu_plugin_insn_data(insn, buf + probe.size, len);
        probe.size += len;
    }
    for (size_t i = 0; i < probe.size; i++) {
        probe.hash = (probe.hash ^ buf[i]) * 1099511628211ULL;
    }
    probe.code = buf;

    g_mutex_lock(&lock);
    b = g_hash_table_lookup(blocks, &probe);
    if (!b) {
        b = g_new0(Block, 1);
        *b = probe; /* start = 0: a block first seen inside an open window counts from 0 */
        b->code = g_memdup2(buf, probe.size);
        b->count = qemu_plugin_scoreboard_new(sizeof(uint64_t));
        g_hash_table_add(blocks, b);
    }
    g_mutex_unlock(&lock);
    qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(tb, QEMU_PLUGIN_INLINE_ADD_U64,
                                                      qemu_plugin_scoreboard_u64(b->count), 1);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (g_str_has_prefix(argv[i], "out=")) {
            out_path = g_strdup(argv[i] + 4);
        } else {
            fprintf(stderr, "count plugin: unknown option %s (usage: out=PATH)\n", argv[i]);
            return -1;
        }
    }
    if (!out_path) {
        fprintf(stderr, "count plugin: give out=PATH\n");
        return -1;
    }
    blocks = g_hash_table_new(block_hash, block_equal);
    qemu_plugin_register_vcpu_tb_trans_cb(id, count_block);
    qemu_plugin_register_vcpu_syscall_cb(id, mark);
    qemu_plugin_register_atexit_cb(id, write_counts, NULL);
    return 0;
}
