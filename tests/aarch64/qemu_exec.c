// qemu_exec.c — preloaded into aarch64 programs run under qemu-user on an x86-64 machine
// (tests/test_aarch64.py), so that one aarch64 program can start another.
//
// A one-file runtime starts by re-executing itself (PyInstaller's bootloader: fork, then
// execvp of its own file). Under qemu-user that exec reaches the host kernel, which has no
// handler for aarch64 programs on this machine (no binfmt_misc registration, on purpose:
// the tests also check what an x86-64 machine says to an aarch64 file). This library
// routes the exec of an aarch64 ELF file through qemu again:
//
//   execve(path, argv, env)  ->  execve($LP_QEMU, [qemu, -E LD_PRELOAD=<this>, -0 argv[0], path,
//                                                  argv[1..]], env without LD_PRELOAD)
//
// The CPU model and library prefix pass down in QEMU_CPU and QEMU_LD_PREFIX, which qemu reads.
// Anything else (a host program, a script) is executed unchanged.
//
//   aarch64-linux-gnu-gcc -shared -fPIC -O2 tests/aarch64/qemu_exec.c -o qemu_exec.so -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;
typedef int (*execve_fn)(const char *, char *const[], char *const[]);

// 1 when path is an ELF file for aarch64 (e_machine 183).
static int is_aarch64_elf(const char *path) {
    unsigned char h[20];
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    const ssize_t n = read(fd, h, sizeof h);
    close(fd);
    return n == (ssize_t)sizeof h && memcmp(h, "\177ELF", 4) == 0 && h[18] == 183 && h[19] == 0;
}

static int real_execve(const char *path, char *const argv[], char *const envp[]) {
    static execve_fn next;
    if (!next) next = (execve_fn)dlsym(RTLD_NEXT, "execve");
    return next(path, argv, envp);
}

int execve(const char *path, char *const argv[], char *const envp[]) {
    const char *qemu = getenv("LP_QEMU"), *self = getenv("LP_QEMU_EXEC_SO");
    if (!qemu || !self || !is_aarch64_elf(path)) return real_execve(path, argv, envp);
    int argc = 0, envc = 0;
    while (argv[argc]) argc++;
    while (envp[envc]) envc++;
    char **args = calloc((size_t)argc + 8, sizeof(char *));
    char **env = calloc((size_t)envc + 1, sizeof(char *));
    char *preload = malloc(strlen(self) + sizeof "LD_PRELOAD=");
    if (!args || !env || !preload) { errno = ENOMEM; return -1; }
    strcpy(preload, "LD_PRELOAD=");
    strcat(preload, self);
    int k = 0;
    args[k++] = (char *)qemu;
    args[k++] = "-E";
    args[k++] = preload;
    args[k++] = "-0";
    args[k++] = argc ? argv[0] : (char *)path;
    args[k++] = (char *)path;
    for (int i = 1; i < argc; i++) args[k++] = argv[i];
    int m = 0;  // the host's loader must not see an aarch64 library to preload
    for (int i = 0; i < envc; i++)
        if (strncmp(envp[i], "LD_PRELOAD=", 11) != 0) env[m++] = envp[i];
    return real_execve(qemu, args, env);
}

int execv(const char *path, char *const argv[]) { return execve(path, argv, environ); }

// PyInstaller passes its own absolute path; a bare name keeps the library's PATH search.
int execvp(const char *file, char *const argv[]) {
    if (strchr(file, '/')) return execve(file, argv, environ);
    typedef int (*execvp_fn)(const char *, char *const[]);
    static execvp_fn next;
    if (!next) next = (execvp_fn)dlsym(RTLD_NEXT, "execvp");
    return next(file, argv);
}
