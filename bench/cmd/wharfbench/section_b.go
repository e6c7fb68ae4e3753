package main

import "context"

func (b *bench) sectionB(ctx context.Context) *Section {
	return newSection("B", "todo", b.cfg.runs)
}
