// Package logs holds the loggers that components fall back to when their
// caller gives them none.
package logs

import (
	"io"

	"github.com/sirupsen/logrus"
)

// Discard returns a logger that writes nothing.
func Discard() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// Warnings returns a logger that writes warnings and errors to stderr.
func Warnings() *logrus.Logger {
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	return l
}
