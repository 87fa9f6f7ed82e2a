// Package features turns one day of the Chicago dataset into the model's
// feature vector. Training and every client that builds requests (the replay
// tool, the retraining pipeline) call Vector, so the order and the derived
// calendar features can never disagree between training and serving.
//
// The vector (Set) is the 48 numeric dataset columns in CSV order (station
// 14-day lags, weather, sports flags; no ridership, no date) — or the 30
// without weather — then dow (day of week, 0=Monday … 6=Sunday, as a number),
// holiday (1 on a US federal holiday's observed date, Christmas Eve, the day
// after Thanksgiving or New Year's Eve, else 0), the named holiday kind, the
// day type, the position in the Christmas–New Year days, month, day of year,
// and the target's yearly lags and levels looked up in a History of past
// values: everything is known 14 days ahead except observed weather.
package features

import (
	"fmt"
	"time"
)

// Target is the dataset column the model predicts; DateColumn the column the
// calendar features come from.
const (
	Target     = "ridership"
	TargetUnit = "thousands of riders" // the unit of Target and of the forecast
	DateColumn = "date"
	// DateLayout is the layout of DateColumn and of every date in Flywheel.
	DateLayout = "2006-01-02"
)

// Names of the derived calendar features, at the end of the vector.
const (
	DayOfWeekName = "dow"
	HolidayName   = "holiday"
)

// numeric are the dataset's numeric input columns in CSV order.
var numeric = [...]string{
	"Austin", "Quincy_Wells", "Belmont", "Archer_35th", "Oak_Park", "Western",
	"Clark_Lake", "Clinton", "Merchandise_Mart", "Irving_Park", "Washington_Wells", "Harlem",
	"Monroe", "Polk", "Ashland", "Kedzie", "Addison", "Jefferson_Park", "Montrose", "California",
	"temp_min", "temp", "temp_max", "temp_change", "dew", "humidity", "pressure",
	"pressure_change", "wind", "wind_max", "gust", "gust_max", "percip", "percip_max",
	"weather_rain", "weather_snow", "weather_cloud", "weather_storm",
	"Blackhawks_Away", "Blackhawks_Home", "Bulls_Away", "Bulls_Home", "Bears_Away", "Bears_Home",
	"WhiteSox_Away", "WhiteSox_Home", "Cubs_Away", "Cubs_Home",
}

// NumNumeric is the number of numeric dataset columns; Count the length of
// the default feature vector (Set{}.Names()); DayOfWeekIndex and
// HolidayIndex the positions of the calendar features in it.
const (
	NumNumeric     = len(numeric)
	Count          = NumNumeric + derived
	DayOfWeekIndex = NumNumeric
	HolidayIndex   = NumNumeric + 1
)

// NumericColumns returns the numeric dataset columns the vector starts with,
// in order (a fresh slice).
func NumericColumns() []string { return append([]string(nil), numeric[:]...) }

// Names returns the default feature set's names in vector order (a fresh
// slice): Set{}.Names(). The model card's input features are such a list.
func Names() []string { return Set{}.Names() }

// DayOfWeek returns 0 for Monday … 6 for Sunday.
func DayOfWeek(date time.Time) int { return (int(date.Weekday()) + 6) % 7 }

// IsHoliday reports whether date (its calendar day, whatever the location) is
// a US federal holiday on its observed date (a Saturday holiday is observed
// the Friday before, a Sunday one the Monday after), Christmas Eve, the day
// after Thanksgiving or New Year's Eve.
func IsHoliday(date time.Time) bool {
	y, m, d := date.Date()
	day := civil(y, m, d)
	switch {
	case m == time.December && (d == 24 || d == 31):
		return true
	case m == time.November && day.Equal(nthWeekday(y, time.November, time.Thursday, 4).AddDate(0, 0, 1)):
		return true
	}
	for _, yy := range []int{y, y + 1} { // New Year's Day on a Saturday is observed on Dec 31 of the year before
		for _, h := range federal(yy) {
			if day.Equal(h) {
				return true
			}
		}
	}
	return false
}

// federal returns the observed dates of the US federal holidays of year y.
func federal(y int) []time.Time {
	hs := []time.Time{
		observed(civil(y, time.January, 1)),
		observed(civil(y, time.July, 4)),
		observed(civil(y, time.November, 11)),
		observed(civil(y, time.December, 25)),
		nthWeekday(y, time.February, time.Monday, 3),   // Washington's Birthday
		lastWeekday(y, time.May, time.Monday),          // Memorial Day
		nthWeekday(y, time.September, time.Monday, 1),  // Labor Day
		nthWeekday(y, time.October, time.Monday, 2),    // Columbus Day
		nthWeekday(y, time.November, time.Thursday, 4), // Thanksgiving
	}
	if y >= 1986 {
		hs = append(hs, nthWeekday(y, time.January, time.Monday, 3)) // Martin Luther King Jr. Day
	}
	if y >= 2021 {
		hs = append(hs, observed(civil(y, time.June, 19))) // Juneteenth
	}
	return hs
}

func civil(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }

// observed moves a Saturday holiday to Friday and a Sunday one to Monday.
func observed(t time.Time) time.Time {
	switch t.Weekday() {
	case time.Saturday:
		return t.AddDate(0, 0, -1)
	case time.Sunday:
		return t.AddDate(0, 0, 1)
	}
	return t
}

// nthWeekday returns the n-th wd of month m in year y (n ≥ 1).
func nthWeekday(y int, m time.Month, wd time.Weekday, n int) time.Time {
	first := civil(y, m, 1)
	offset := (int(wd) - int(first.Weekday()) + 7) % 7
	return first.AddDate(0, 0, offset+7*(n-1))
}

// lastWeekday returns the last wd of month m in year y.
func lastWeekday(y int, m time.Month, wd time.Weekday) time.Time {
	last := civil(y, m+1, 0)
	offset := (int(last.Weekday()) - int(wd) + 7) % 7
	return last.AddDate(0, 0, -offset)
}

// Ordered returns values in the order of names (e.g. a model card's feature
// list), for rows that already carry every feature by name, such as the
// feedback export's "features" objects. A missing name is an error.
func Ordered(values map[string]float64, names []string) ([]float64, error) {
	v := make([]float64, len(names))
	for i, n := range names {
		x, ok := values[n]
		if !ok {
			return nil, fmt.Errorf("features: missing value for %q", n)
		}
		v[i] = x
	}
	return v, nil
}
