/* Test shim, LD_PRELOADed into a child Python: once armed with qssh_arm(seed, len),
 * the next getrandom() calls are served from that seed (and counted) instead of the
 * kernel; everything before arming and after the seed is used up goes to the real
 * getrandom. Lets a test run PQClean's own crypto_sign_keypair() on a chosen seed. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>
#include <sys/types.h>

static unsigned char armed[256];
static size_t armed_len, armed_pos, served;

void qssh_arm(const unsigned char *seed, size_t len) {
    if (len > sizeof armed) len = sizeof armed;
    memcpy(armed, seed, len);
    armed_len = len;
    armed_pos = 0;
    served = 0;
}

size_t qssh_served(void) { return served; }

ssize_t getrandom(void *buf, size_t buflen, unsigned int flags) {
    if (armed_pos < armed_len) {
        size_t n = armed_len - armed_pos;
        if (n > buflen) n = buflen;
        memcpy(buf, armed + armed_pos, n);
        armed_pos += n;
        served += n;
        return (ssize_t)n;
    }
    ssize_t (*real)(void *, size_t, unsigned int) =
        (ssize_t (*)(void *, size_t, unsigned int))dlsym(RTLD_NEXT, "getrandom");
    return real(buf, buflen, flags);
}
