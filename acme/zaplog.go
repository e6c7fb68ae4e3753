package acme

import (
	"github.com/rs/zerolog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newZapLogger returns a zap logger (certmagic logs through zap) whose
// entries end up in log, so wharf has one log stream in one format.
func newZapLogger(log zerolog.Logger) *zap.Logger {
	return zap.New(&zeroCore{log: log})
}

// zeroCore is a zapcore.Core that writes every entry to a zerolog.Logger.
type zeroCore struct {
	log    zerolog.Logger
	fields []zapcore.Field
}

func zeroLevel(l zapcore.Level) zerolog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return zerolog.DebugLevel
	case l == zapcore.InfoLevel:
		return zerolog.InfoLevel
	case l == zapcore.WarnLevel:
		return zerolog.WarnLevel
	default:
		return zerolog.ErrorLevel
	}
}

func (c *zeroCore) Enabled(l zapcore.Level) bool {
	zl := zeroLevel(l)
	return zl >= c.log.GetLevel() && zl >= zerolog.GlobalLevel()
}

func (c *zeroCore) With(fields []zapcore.Field) zapcore.Core {
	all := make([]zapcore.Field, 0, len(c.fields)+len(fields))
	all = append(all, c.fields...)
	all = append(all, fields...)
	return &zeroCore{log: c.log, fields: all}
}

func (c *zeroCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *zeroCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	ev := c.log.WithLevel(zeroLevel(e.Level))
	if e.LoggerName != "" {
		ev = ev.Str("logger", e.LoggerName)
	}
	ev.Fields(enc.Fields).Msg(e.Message)
	return nil
}

func (c *zeroCore) Sync() error { return nil }
