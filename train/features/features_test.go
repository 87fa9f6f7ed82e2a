package features

import (
	"strings"
	"testing"
	"time"
)

func day(s string) time.Time {
	t, err := time.Parse(DateLayout, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestCalendar(t *testing.T) {
	cases := []struct {
		date    string
		dow     int
		holiday bool
		why     string
	}{
		{"2012-11-22", 3, true, "Thanksgiving"},
		{"2012-11-23", 4, true, "day after Thanksgiving"},
		{"2012-11-21", 2, false, "day before Thanksgiving"},
		{"2015-07-03", 4, true, "Independence Day observed (Friday)"},
		{"2015-07-04", 5, false, "Independence Day on a Saturday: observed the day before"},
		{"2010-12-31", 4, true, "New Year's Eve (also New Year 2011, a Saturday, observed)"},
		{"2011-01-01", 5, false, "New Year's Day on a Saturday"},
		{"2012-01-02", 0, true, "New Year's Day observed (Sunday → Monday)"},
		{"2012-01-01", 6, false, "New Year's Day on a Sunday"},
		{"2012-01-16", 0, true, "Martin Luther King Jr. Day"},
		{"2012-02-20", 0, true, "Washington's Birthday"},
		{"2012-05-28", 0, true, "Memorial Day (last Monday of May)"},
		{"2012-05-21", 0, false, "an ordinary Monday"},
		{"2012-09-03", 0, true, "Labor Day"},
		{"2012-10-08", 0, true, "Columbus Day"},
		{"2012-11-12", 0, true, "Veterans Day observed (Sunday → Monday)"},
		{"2012-11-11", 6, false, "Veterans Day on a Sunday"},
		{"2012-12-24", 0, true, "Christmas Eve"},
		{"2012-12-25", 1, true, "Christmas"},
		{"2011-12-26", 0, true, "Christmas observed (Sunday → Monday)"},
		{"2012-12-31", 0, true, "New Year's Eve"},
		{"2012-03-14", 2, false, "an ordinary Wednesday"},
		{"2001-01-22", 0, false, "first dataset day"},
		{"2016-08-28", 6, false, "last dataset day"},
		{"2021-06-18", 4, true, "Juneteenth observed (Saturday → Friday)"},
		{"2020-06-19", 4, false, "Juneteenth before it was a federal holiday"},
	}
	for _, tc := range cases {
		t.Run(tc.date, func(t *testing.T) {
			d := day(tc.date)
			if got := DayOfWeek(d); got != tc.dow {
				t.Errorf("DayOfWeek = %d, want %d", got, tc.dow)
			}
			if got := IsHoliday(d); got != tc.holiday {
				t.Errorf("IsHoliday = %v, want %v (%s)", got, tc.holiday, tc.why)
			}
		})
	}
}

func TestVector(t *testing.T) {
	names := Names()
	if len(names) != Count || names[0] != "Austin" || names[NumNumeric-1] != "Cubs_Home" ||
		names[DayOfWeekIndex] != "dow" || names[HolidayIndex] != "holiday" {
		t.Fatalf("names %v", names)
	}
	vals := make([]float64, NumNumeric)
	for i := range vals {
		vals[i] = float64(i)
	}
	v, err := Vector(vals, day("2012-11-22"))
	if err != nil {
		t.Fatal(err)
	}
	if v[5] != 5 || v[DayOfWeekIndex] != 3 || v[HolidayIndex] != 1 {
		t.Fatalf("vector %v", v)
	}
	if _, err := Vector(vals[:3], day("2012-11-22")); err == nil {
		t.Fatal("short vector accepted")
	}
	m := map[string]float64{}
	for i, n := range NumericColumns() {
		m[n] = float64(i)
	}
	v2, err := FromMap(m, day("2012-11-22"))
	if err != nil || v2[47] != 47 || v2[HolidayIndex] != 1 {
		t.Fatalf("FromMap %v %v", v2, err)
	}
	m["dow"], m["holiday"] = 3, 1
	v3, err := Ordered(m, Names())
	if err != nil || v3[DayOfWeekIndex] != 3 || v3[0] != 0 || len(v3) != Count {
		t.Fatalf("Ordered %v %v", v3, err)
	}
	delete(m, "temp")
	if _, err := FromMap(m, day("2012-11-22")); err == nil || !strings.Contains(err.Error(), `"temp"`) {
		t.Fatalf("missing column: %v", err)
	}
}
