package features

import "time"

// Holiday kinds: HolidayKind's codes, in the order of HolidayKinds.
const (
	NoHoliday = iota
	NewYear
	MLKDay
	PresidentsDay
	MemorialDay
	IndependenceDay
	LaborDay
	ColumbusDay
	VeteransDay
	Thanksgiving
	DayAfterThanksgiving
	ChristmasEve
	Christmas
	NewYearsEve
	Juneteenth
	StPatricksParade
)

// HolidayKinds names the kinds by code (index 0 is "none").
func HolidayKinds() []string {
	return []string{"none", "new_year", "mlk_day", "presidents_day", "memorial_day", "independence_day",
		"labor_day", "columbus_day", "veterans_day", "thanksgiving", "day_after_thanksgiving",
		"christmas_eve", "christmas", "new_years_eve", "juneteenth", "st_patricks_parade"}
}

// HolidayKind returns the code of the named holiday date falls on: the
// calendar days of Christmas Eve, Christmas, New Year's Eve and New Year
// first (when most riders stay home whatever the weekday), then the observed
// date of a US federal holiday (a Saturday holiday observed the Friday before,
// a Sunday one the Monday after) and the day after Thanksgiving; NoHoliday
// otherwise.
func HolidayKind(date time.Time) int {
	y, m, d := date.Date()
	switch {
	case m == time.December && d == 24:
		return ChristmasEve
	case m == time.December && d == 25:
		return Christmas
	case m == time.December && d == 31:
		return NewYearsEve
	case m == time.January && d == 1:
		return NewYear
	}
	day := civil(y, m, d)
	if day.Equal(nthWeekday(y, time.November, time.Thursday, 4).AddDate(0, 0, 1)) {
		return DayAfterThanksgiving
	}
	kinds := []struct {
		kind int
		date func(y int) time.Time
	}{
		{NewYear, func(y int) time.Time { return observed(civil(y, time.January, 1)) }},
		{MLKDay, func(y int) time.Time { return nthWeekday(y, time.January, time.Monday, 3) }},
		{PresidentsDay, func(y int) time.Time { return nthWeekday(y, time.February, time.Monday, 3) }},
		{MemorialDay, func(y int) time.Time { return lastWeekday(y, time.May, time.Monday) }},
		{IndependenceDay, func(y int) time.Time { return observed(civil(y, time.July, 4)) }},
		{LaborDay, func(y int) time.Time { return nthWeekday(y, time.September, time.Monday, 1) }},
		{ColumbusDay, func(y int) time.Time { return nthWeekday(y, time.October, time.Monday, 2) }},
		{VeteransDay, func(y int) time.Time { return observed(civil(y, time.November, 11)) }},
		{Thanksgiving, func(y int) time.Time { return nthWeekday(y, time.November, time.Thursday, 4) }},
		{Christmas, func(y int) time.Time { return observed(civil(y, time.December, 25)) }},
	}
	for _, k := range kinds {
		if day.Equal(k.date(y)) {
			return k.kind
		}
	}
	if m == time.December && day.Equal(observed(civil(y+1, time.January, 1))) {
		return NewYear // New Year's Day on a Saturday is observed on Dec 31 (caught above as New Year's Eve)
	}
	if y >= 2021 && day.Equal(observed(civil(y, time.June, 19))) {
		return Juneteenth
	}
	if m == time.March && date.Weekday() == time.Saturday && d >= 11 && d <= 17 {
		return StPatricksParade // Chicago's parade: the Saturday on or before March 17
	}
	return NoHoliday
}

// Day types (DayType).
const (
	Workday      = 0
	Saturday     = 1
	SundayLike   = 2 // Sunday, or a holiday most workplaces close on
	ReducedDay   = 3 // a workday many take off: minor holidays, the days between Christmas and New Year
	SaturdayPeak = 4 // a Saturday with a city-centre crowd (St. Patrick's parade)
)

// DayType groups days by how the city travels on them, so a model sees
// every closing holiday (about six a year) as one kind of day instead of
// ten rows each.
func DayType(date time.Time) int {
	switch HolidayKind(date) {
	case NewYear, MemorialDay, IndependenceDay, LaborDay, Thanksgiving, Christmas:
		return SundayLike
	case StPatricksParade:
		return SaturdayPeak
	}
	switch date.Weekday() {
	case time.Sunday:
		return SundayLike
	case time.Saturday:
		return Saturday
	}
	if HolidayKind(date) != NoHoliday || ChristmasDay(date) > 0 {
		return ReducedDay
	}
	return Workday
}

// ChristmasDay returns the position of date in the Christmas–New Year
// period: 1 for December 24 … 9 for January 1, else 0.
func ChristmasDay(date time.Time) int {
	_, m, d := date.Date()
	switch {
	case m == time.December && d >= 24:
		return d - 23
	case m == time.January && d == 1:
		return 9
	}
	return 0
}
