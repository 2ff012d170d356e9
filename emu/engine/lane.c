/* The executor's native lane: a Unicorn code hook that executes the visible operations
 * Python has already decided, without calling Python.
 *
 * Before the guest runs on, the executor grants a budget: how many further visible
 * operations of the running task are plain continuations (the scheduler keeps the default
 * there, and nothing else can happen: no fairness rotation, no hang check, no host step).
 * This hook spends the budget: it filters loads outside the clock pages, logs each
 * operation (t, kind, pc, arg), and emulates rdtsc/rdtscp/rdpid from the model's clock.
 * Anything else, or an exhausted budget, goes to the Python hook, which first settles the
 * log into the run. See emu/lane.py.
 *
 * The sites are reached through one Unicorn hook over their address range and a table
 * (lane_table_hook), not one hook each: the engine walks its whole list of code hooks for
 * every hooked instruction, and with an instruction limit (the executor's hang check) every
 * instruction is hooked, so a real vDSO's hundreds of sites made each instruction cost
 * hundreds of checks.
 */
#include <stdint.h>

typedef void uc_engine;
typedef int (*reg_fn)(uc_engine *uc, int regid, void *value);
typedef void (*python_fn)(uint64_t addr);

enum { K_LOAD = 0, K_TSC = 1, K_TSCP = 2, K_RDPID = 3, K_FENCE = 4, K_PYTHON = 5 };
/* marks a logged operation that was decided before the lane ran it */
#define FREE 8u

typedef struct lane {
    reg_fn reg_read;
    reg_fn reg_write;
    python_fn python;
    uint64_t lo, hi, mask;
    int32_t pc, ax, dx, cx;
    /* granted by Python: operations to run, and whether the first is already decided
       (the task was just chosen: it neither counts as a decision nor spends budget) */
    int64_t budget;
    int64_t free;
    uint64_t t;
    int64_t vcpu;
    /* the running vCPU's TSC: start_tsc + (t - start) * hz * ns_per_step / 1e9 */
    uint64_t seg_start, seg_tsc, seg_hz, ns_per_step;
    /* the log: 4 words per operation */
    uint64_t n, cap;
    uint64_t *log;
} lane_t;

typedef struct site {
    lane_t *lane;
    int64_t kind;
    int64_t base, index, scale, disp;
    uint64_t fixed;
    int64_t size;
    int64_t reg;
} site_t;

static uint64_t rd(lane_t *l, uc_engine *uc, int64_t reg)
{
    uint64_t v = 0;
    l->reg_read(uc, (int)reg, &v);
    return v;
}

static void wr(lane_t *l, uc_engine *uc, int64_t reg, uint64_t v)
{
    l->reg_write(uc, (int)reg, &v);
}

void lane_hook(uc_engine *uc, uint64_t addr, uint32_t size, void *data)
{
    site_t *s = (site_t *)data;
    lane_t *l = s->lane;
    uint64_t arg = 0;
    (void)size;
    if (s->kind == K_LOAD) {
        if (s->fixed) {
            arg = s->fixed;
        } else {
            arg = (uint64_t)s->disp;
            if (s->base)
                arg += rd(l, uc, s->base);
            if (s->index)
                arg += rd(l, uc, s->index) * (uint64_t)s->scale;
            arg &= l->mask;
        }
        if (arg < l->lo || arg >= l->hi)
            return; /* not a clock page: invisible */
    } else if (s->kind == K_FENCE && (l->budget > 0 || l->free > 0)) {
        return; /* only speculation cares about fences, and the lane is off with it */
    }
    uint64_t decided = 0;
    if (s->kind >= K_FENCE || l->n >= l->cap) {
        l->python(addr);
        return;
    }
    if (l->free > 0) {
        l->free = 0;
        decided = FREE;
    } else if (l->budget > 0) {
        l->budget--;
    } else {
        l->python(addr);
        return;
    }
    uint64_t t = l->t++;
    if (s->kind == K_TSC || s->kind == K_TSCP) {
        unsigned __int128 d = (unsigned __int128)(t - l->seg_start) * l->seg_hz * l->ns_per_step;
        arg = l->seg_tsc + (uint64_t)(d / 1000000000u);
        /* edx:eax; a 64-bit write also clears the upper halves, as rdtsc does */
        wr(l, uc, l->ax, arg & 0xffffffffu);
        wr(l, uc, l->dx, arg >> 32);
        if (s->kind == K_TSCP)
            wr(l, uc, l->cx, (uint64_t)l->vcpu);
        wr(l, uc, l->pc, addr + (uint64_t)s->size);
    } else if (s->kind == K_RDPID) {
        arg = (uint64_t)l->vcpu;
        wr(l, uc, s->reg, arg);
        wr(l, uc, l->pc, addr + (uint64_t)s->size);
    }
    uint64_t *e = l->log + 4 * l->n++;
    e[0] = t;
    e[1] = (uint64_t)s->kind | decided;
    e[2] = addr;
    e[3] = arg;
}

typedef struct table {
    uint64_t lo, n;
    site_t **sites; /* sites[addr - lo], NULL where no site starts */
} table_t;

void lane_table_hook(uc_engine *uc, uint64_t addr, uint32_t size, void *data)
{
    table_t *t = (table_t *)data;
    uint64_t i = addr - t->lo;
    if (i < t->n && t->sites[i])
        lane_hook(uc, addr, size, t->sites[i]);
}
