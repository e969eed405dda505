package bench

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Series is one line of a plot.
type Series struct {
	Name   string
	Points []Point
}

var palette = []color.RGBA{
	{0x1f, 0x77, 0xb4, 0xff}, {0xd6, 0x27, 0x28, 0xff}, {0x2c, 0xa0, 0x2c, 0xff},
	{0xff, 0x7f, 0x0e, 0xff}, {0x94, 0x67, 0xbd, 0xff}, {0x8c, 0x56, 0x4b, 0xff},
}

// PlotCDF draws latency CDFs on a logarithmic millisecond axis as a PNG.
func PlotCDF(w io.Writer, title string, series []Series) error {
	const W, H = 900, 520
	const left, right, top, bottom = 70, 20, 40, 60
	img := image.NewRGBA(image.Rect(0, 0, W, H))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range series {
		for _, p := range s.Points {
			x := math.Max(p.X, 0.1)
			lo, hi = math.Min(lo, x), math.Max(hi, x)
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 1, 10
	}
	lo = math.Pow(10, math.Floor(math.Log10(lo)))
	hi = math.Pow(10, math.Ceil(math.Log10(hi)))
	if hi <= lo {
		hi = lo * 10
	}
	pw, ph := float64(W-left-right), float64(H-top-bottom)
	px := func(ms float64) int {
		return left + int(pw*(math.Log10(math.Max(ms, lo))-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo)))
	}
	py := func(frac float64) int { return top + int(ph*(1-frac)) }
	grid := color.RGBA{0xdd, 0xdd, 0xdd, 0xff}
	black := color.RGBA{0, 0, 0, 0xff}
	for d := lo; d <= hi*1.001; d *= 10 {
		for _, m := range []float64{1, 2, 5} {
			v := d * m
			if v > hi*1.001 {
				break
			}
			x := px(v)
			line(img, x, top, x, H-bottom, grid)
			text(img, x-len(label(v))*7/2, H-bottom+16, label(v), black)
		}
	}
	for _, f := range []float64{0, .25, .5, .75, .9, 1} {
		y := py(f)
		line(img, left, y, W-right, y, grid)
		text(img, left-40, y+4, fmt.Sprintf("%.2f", f), black)
	}
	line(img, left, top, left, H-bottom, black)
	line(img, left, H-bottom, W-right, H-bottom, black)
	text(img, left, 24, title, black)
	text(img, W/2-120, H-20, "end-to-end propagation latency (ms, log scale)", black)
	for i, s := range series {
		c := palette[i%len(palette)]
		for j := 1; j < len(s.Points); j++ {
			a, b := s.Points[j-1], s.Points[j]
			// A CDF is a step function: across, then up.
			thick(img, px(a.X), py(a.Y), px(b.X), py(a.Y), c)
			thick(img, px(b.X), py(a.Y), px(b.X), py(b.Y), c)
		}
		ly := top + 20 + i*18
		thick(img, W-right-230, ly-4, W-right-205, ly-4, c)
		text(img, W-right-198, ly, s.Name, black)
	}
	return png.Encode(w, img)
}

func label(v float64) string {
	if v >= 1 {
		return fmt.Sprintf("%g", v)
	}
	return fmt.Sprintf("%.1f", v)
}

func text(img *image.RGBA, x, y int, s string, c color.Color) {
	d := &font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13,
		Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func line(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for {
		img.Set(x0, y0, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func thick(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	line(img, x0, y0, x1, y1, c)
	line(img, x0, y0+1, x1, y1+1, c)
	line(img, x0+1, y0, x1+1, y1, c)
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func sign(x int) int {
	switch {
	case x > 0:
		return 1
	case x < 0:
		return -1
	}
	return 0
}
