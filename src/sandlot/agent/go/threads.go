package main

// Threads the agent holds from its start.
//
// Go's runtime makes an OS thread whenever a goroutine blocks in a system call
// and no idle one is left, and it dies ("failed to create new OS thread") when
// the kernel refuses one. Under crun the sandbox's pids limit counts the agent's
// threads with the sandbox's processes, so a fork bomb that fills the cgroup
// would kill the agent with the next blocking call. So, before anything else
// runs in the sandbox, the agent makes the threads its reserve allows: each of
// n goroutines locks itself to a thread of its own and waits until all n are
// there; then all unlock and end, and their threads stay in the runtime's idle
// list (it never ends an idle thread), where later blocking calls find them.

import (
	"os"
	"runtime"
)

// threadCount is how many threads the agent has now.
func threadCount() int {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0
	}
	return len(tasks)
}

// reserveThreads makes the agent's threads number at least `want` (as far as the
// kernel allows) and leaves them idle for the runtime; it returns how many it has.
func reserveThreads(want int) int {
	have := threadCount()
	if want <= have {
		return have
	}
	release := make(chan struct{})
	locked := make(chan struct{})
	// One more locked goroutine at a time until the count is reached: sysmon and the
	// runtime's template thread come and go with the first ones.
	for i := 0; i < want && threadCount() < want; i++ {
		go func() {
			runtime.LockOSThread()
			locked <- struct{}{}
			<-release
			runtime.UnlockOSThread() // unlocked: its thread goes idle rather than exiting with it
		}()
		<-locked
	}
	close(release)
	return threadCount()
}
