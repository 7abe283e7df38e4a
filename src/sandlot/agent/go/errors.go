package main

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// agentError is an error with a protocol error code; anything else is "internal".
type agentError struct {
	Code    string
	Message string
	Path    string
}

func (e *agentError) Error() string { return e.Message }

func errInvalid(format string, a ...interface{}) error {
	return &agentError{Code: ErrInvalid, Message: fmt.Sprintf(format, a...)}
}

func errCode(code, path, format string, a ...interface{}) error {
	return &agentError{Code: code, Message: fmt.Sprintf(format, a...), Path: path}
}

var errnoCodes = map[syscall.Errno]struct{ code, text string }{
	syscall.ENOENT:       {ErrNotFound, "no such file or directory"},
	syscall.EISDIR:       {ErrIsADirectory, "is a directory"},
	syscall.ENOTDIR:      {ErrNotADirectory, "not a directory"},
	syscall.EEXIST:       {ErrExists, "already exists"},
	syscall.EACCES:       {ErrPermissionDenied, "permission denied"},
	syscall.EPERM:        {ErrPermissionDenied, "operation not permitted"},
	syscall.EROFS:        {ErrPermissionDenied, "read-only file system"},
	syscall.ENOTEMPTY:    {ErrNotEmpty, "directory not empty"},
	syscall.ENOSPC:       {ErrNoSpace, "no space left on device"},
	syscall.EDQUOT:       {ErrNoSpace, "disk quota exceeded"},
	syscall.ELOOP:        {ErrInvalid, "too many levels of symbolic links"},
	syscall.ENAMETOOLONG: {ErrInvalid, "file name too long"},
	syscall.EXDEV:        {ErrInvalid, "cannot move across file systems"},
	syscall.EINVAL:       {ErrInvalid, "invalid argument"},
}

// fsErr maps an error from a file operation on path to a protocol error.
func fsErr(err error, path string) error {
	if err == nil {
		return nil
	}
	var ae *agentError
	if errors.As(err, &ae) {
		return err
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if m, ok := errnoCodes[errno]; ok {
			return &agentError{Code: m.code, Message: fmt.Sprintf("%s: %s", m.text, path), Path: path}
		}
	}
	if errors.Is(err, os.ErrNotExist) {
		return &agentError{Code: ErrNotFound, Message: "no such file or directory: " + path, Path: path}
	}
	return &agentError{Code: ErrInternal, Message: fmt.Sprintf("%s: %v", path, err), Path: path}
}
