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

func TestSetVector(t *testing.T) {
	names := Names()
	if len(names) != Count || names[0] != "Austin" || names[NumNumeric-1] != "Cubs_Home" ||
		names[DayOfWeekIndex] != "dow" || names[HolidayIndex] != "holiday" {
		t.Fatalf("names %v", names)
	}
	h := History{}
	d := day("2012-11-22")
	h.Add(d.AddDate(0, 0, -364), 100)
	h.Add(d.AddDate(0, 0, -371), 200)
	for k := 14; k < 14+levelDays; k++ {
		h.Add(d.AddDate(0, 0, -k), 12)
	}
	for k := 378; k < 378+levelDays; k++ {
		h.Add(d.AddDate(0, 0, -k), 10)
	}
	s := Set{History: h}
	vals := make([]float64, NumNumeric)
	for i := range vals {
		vals[i] = float64(i)
	}
	v, err := s.Vector(vals, d)
	if err != nil {
		t.Fatal(err)
	}
	at := func(name string) float64 { return v[Index(names, name)] }
	if v[5] != 5 || v[DayOfWeekIndex] != 3 || v[HolidayIndex] != 1 || len(v) != Count {
		t.Fatalf("vector %v", v)
	}
	lag14 := float64(Index(NumericColumns(), Lag14Column))
	for name, want := range map[string]float64{
		HolidayKindName: Thanksgiving, DayTypeName: SundayLike, MonthName: 11, DayOfYearName: 327,
		Lag364Name: 100, Lag371Name: 200, Lag378Name: 10, Level14Name: 12, Level378Name: 10,
		TrendName: 1.2, Lag364TrendName: 120, ChristmasDayName: 0,
	} {
		if got := at(name); got-want > 1e-9 || want-got > 1e-9 {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if s.HasLags(d) != true || s.HasLags(d.AddDate(0, 0, 1)) {
		t.Errorf("HasLags: want true for %s only", d.Format(DateLayout))
	}
	// without history every lag and level falls back to the 14-day lag column
	v0, _ := Set{}.Vector(vals, d)
	for _, name := range []string{Lag364Name, Lag371Name, Level14Name} {
		if got := v0[Index(names, name)]; got != lag14 {
			t.Errorf("%s without history = %v, want the 14-day lag %v", name, got, lag14)
		}
	}
	if _, err := s.Vector(vals[:3], d); err == nil {
		t.Fatal("short vector accepted")
	}
	m := map[string]float64{}
	for i, n := range NumericColumns() {
		m[n] = float64(i)
	}
	v2, err := s.FromMap(m, d)
	if err != nil || v2[47] != 47 || v2[HolidayIndex] != 1 {
		t.Fatalf("FromMap %v %v", v2, err)
	}
	full := map[string]float64{}
	for i, n := range names {
		full[n] = v2[i]
	}
	v3, err := Ordered(full, names)
	if err != nil || v3[DayOfWeekIndex] != 3 || v3[0] != 0 || len(v3) != Count {
		t.Fatalf("Ordered %v %v", v3, err)
	}
	delete(m, "temp")
	if _, err := s.FromMap(m, d); err == nil || !strings.Contains(err.Error(), `"temp"`) {
		t.Fatalf("missing column: %v", err)
	}
}

func TestWeatherNone(t *testing.T) {
	none := Set{Weather: WeatherNone}.Names()
	if len(none) != Count-18 {
		t.Fatalf("%d names without weather, want %d", len(none), Count-18)
	}
	for _, n := range none {
		if IsWeather(n) {
			t.Errorf("weather column %q in the weather-free set", n)
		}
	}
	v, err := Set{Weather: WeatherNone}.Vector(make([]float64, NumNumeric), day("2012-01-02"))
	if err != nil || len(v) != len(none) {
		t.Fatalf("vector of %d for %d names (%v)", len(v), len(none), err)
	}
	if err := (Set{Weather: "forecast"}).Validate(); err == nil {
		t.Error("weather \"forecast\" accepted")
	}
}

func TestHolidayKinds(t *testing.T) {
	cases := []struct {
		date    string
		kind    int
		dayType int
		xmasDay int
	}{
		{"2012-07-04", IndependenceDay, SundayLike, 0},
		{"2012-12-25", Christmas, SundayLike, 2},
		{"2012-12-26", NoHoliday, ReducedDay, 3},
		{"2012-12-29", NoHoliday, Saturday, 6},
		{"2013-01-01", NewYear, SundayLike, 9},
		{"2012-01-02", NewYear, SundayLike, 0},
		{"2012-11-23", DayAfterThanksgiving, ReducedDay, 0},
		{"2012-03-17", StPatricksParade, SaturdayPeak, 0},
		{"2012-03-10", NoHoliday, Saturday, 0},
		{"2012-01-16", MLKDay, ReducedDay, 0},
		{"2012-05-28", MemorialDay, SundayLike, 0},
		{"2012-03-14", NoHoliday, Workday, 0},
		{"2012-03-18", NoHoliday, SundayLike, 0},
	}
	kinds := HolidayKinds()
	for _, tc := range cases {
		d := day(tc.date)
		if got := HolidayKind(d); got != tc.kind {
			t.Errorf("%s: kind %s, want %s", tc.date, kinds[got], kinds[tc.kind])
		}
		if got := DayType(d); got != tc.dayType {
			t.Errorf("%s: day type %d, want %d", tc.date, got, tc.dayType)
		}
		if got := ChristmasDay(d); got != tc.xmasDay {
			t.Errorf("%s: Christmas day %d, want %d", tc.date, got, tc.xmasDay)
		}
	}
}
