package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"unsafe"
)

const rlimitNproc = 6 // RLIMIT_NPROC on Linux

func notifySigchld(ch chan os.Signal) { signal.Notify(ch, syscall.SIGCHLD) }

func ioctl(fd, req, arg uintptr) error {
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, req, arg); e != 0 {
		return e
	}
	return nil
}

// openPty allocates a pseudo-terminal pair of the given size.
func openPty(rows, cols int64) (*os.File, *os.File, error) {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, errCode(ErrInternal, "", "cannot open /dev/ptmx: %v", err)
	}
	var unlock int32
	if err := ioctl(master.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); err != nil {
		master.Close()
		return nil, nil, errCode(ErrInternal, "", "cannot unlock the pty: %v", err)
	}
	var n uint32
	if err := ioctl(master.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); err != nil {
		master.Close()
		return nil, nil, errCode(ErrInternal, "", "cannot get the pty number: %v", err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		master.Close()
		return nil, nil, errCode(ErrInternal, "", "cannot open the pty: %v", err)
	}
	if err := setWinsize(master, rows, cols); err != nil {
		master.Close()
		slave.Close()
		return nil, nil, err
	}
	return master, slave, nil
}

func setWinsize(f *os.File, rows, cols int64) error {
	ws := struct{ Row, Col, X, Y uint16 }{uint16(rows), uint16(cols), 0, 0}
	if err := ioctl(f.Fd(), syscall.TIOCSWINSZ, uintptr(unsafe.Pointer(&ws))); err != nil {
		return errCode(ErrInternal, "", "cannot resize the terminal: %v", err)
	}
	return nil
}

type pollFd struct {
	fd      int32
	events  int16
	revents int16
}

const pollIn = 0x1

func poll(fds []pollFd, timeoutMs int) (int, error) {
	n, _, e := syscall.Syscall(syscall.SYS_POLL, uintptr(unsafe.Pointer(&fds[0])), uintptr(len(fds)), uintptr(timeoutMs))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
