package main

import "context"

func (b *bench) sectionC(ctx context.Context) *Section {
	return newSection("C", "todo", b.cfg.runs)
}
